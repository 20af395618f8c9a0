//! Events on every replica: with PostgreSQL, [`super::publish`] sends each event as a
//! `NOTIFY` on [`CHANNEL`] (queued, in order) and every replica (the publishing one too)
//! `LISTEN`s and feeds its local broadcast, so each SSE stream gets each event once, whichever
//! replica made it. One path only: a published event reaches the local broadcast through the
//! database, never also directly, unless the database refused it or the queue is full (4096
//! waiting: the database is slow or down); then only the local streams see it. A lost `LISTEN` connection is made again; events in the gap are missed, as events
//! under load are. SQLite: local only.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::{sync::broadcast, task::JoinHandle};

use super::event::Event;
use crate::{
    db::{Db, Heard},
    error::Result,
    state::AppState,
};

/// The PostgreSQL channel events travel on.
pub const CHANNEL: &str = "wrenn_events";

/// An event as it travels between replicas: with its team (which the API's JSON omits).
#[derive(Serialize, Deserialize)]
struct Relayed {
    team_id: String,
    event: Event,
}

/// The text form of `event` on [`CHANNEL`].
pub fn encode(event: &Event) -> String {
    serde_json::to_string(&Relayed {
        team_id: event.team_id.clone(),
        event: event.clone(),
    })
    .unwrap_or_default()
}

/// `text` read back into an event.
pub fn decode(text: &str) -> Option<Event> {
    let r: Relayed = serde_json::from_str(text).ok()?;
    Some(Event {
        team_id: r.team_id,
        ..r.event
    })
}

/// Starts relaying (PostgreSQL; nothing on SQLite): listens on [`CHANNEL`] first, then lets
/// [`super::publish`] send through it. The tasks' handles (sender, listener).
pub async fn start(state: &AppState) -> Result<Option<(JoinHandle<()>, JoinHandle<()>)>> {
    let Some(mut listener) = state.db.listen(CHANNEL).await? else {
        return Ok(None);
    };
    let Some(mut outbox) = state.db.outbox(CHANNEL) else {
        return Ok(None);
    };
    let (db, local) = (state.db.clone(), state.events.clone());
    let sender = tokio::spawn(async move {
        while let Some(text) = outbox.recv().await {
            if let Err(e) = db.notify(CHANNEL, &text).await {
                tracing::warn!(error = %e, "relaying an event to the other replicas; only this one's streams get it");
                deliver(&local, &text);
            }
        }
    });
    let local = state.events.clone();
    let receiver = tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(Heard::Payload(text)) => deliver(&local, &text),
                Ok(Heard::Gap) => tracing::warn!(
                    "the events channel's database connection was lost; reconnecting (events meanwhile are missed)"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "listening for events");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    tracing::info!(instance = %state.db.instance(), "events relayed through PostgreSQL");
    Ok(Some((sender, receiver)))
}

fn deliver(local: &broadcast::Sender<Event>, text: &str) {
    match decode(text) {
        Some(e) => {
            let _ = local.send(e);
        }
        None => tracing::warn!("an unreadable event on {CHANNEL}"),
    }
}

/// Queues `event` for every replica; false when events are not relayed (deliver locally).
pub(super) fn send(db: &Db, event: &Event) -> bool {
    db.enqueue(CHANNEL, encode(event))
}
