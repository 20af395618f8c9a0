//! Lifecycle events: published on a broadcast channel, streamed to each team as SSE.

use std::{collections::HashMap, convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures_util::Stream;
use tokio_stream::{wrappers::BroadcastStream, StreamExt};

pub mod event;
pub mod relay;

pub use event::{Actor, Event, EventFrame, EventKind, Resource};

use crate::{db::Caller, responses::Authed, state::AppState, time::rfc3339};

/// Publishes an event (nobody listening is fine): to every replica's streams when they share
/// PostgreSQL ([`relay`]), else to this one's.
pub fn publish(state: &AppState, event: Event) {
    if relay::send(&state.db, &event) {
        return;
    }
    let _ = state.events.send(event);
}

/// Stream the team's events
///
/// Server-sent events (`text/event-stream`): each event is one `data:` line holding an `Event`
/// as JSON, then a blank line. The first is `connected`; then the team's lifecycle events as
/// they happen (capsules created, paused, resumed, destroyed or changed state; snapshots made or
/// deleted). A `:` comment line every 15 s keeps the connection open. Events missed under load
/// are dropped, never replayed.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    operation_id = "stream_events",
    tag = "events",
    responses(
        (status = 200, description = "An endless stream of events; each one's `data` is an `Event` as JSON", body = EventFrame, content_type = "text/event-stream"),
        Authed,
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let connected = Event {
        team_id: caller.team_id.clone(),
        event: "connected".into(),
        outcome: "success".into(),
        resource: Resource {
            id: caller.team_id.clone(),
            kind: "team".into(),
        },
        actor: Actor {
            kind: caller.actor_type,
            id: caller.actor_id.clone(),
            name: caller.actor_name.clone(),
        },
        metadata: HashMap::new(),
        error: None,
        sandbox: None,
        timestamp: rfc3339(crate::db::now_ms()),
    };
    let team = caller.team_id.clone();
    let live = BroadcastStream::new(state.events.subscribe()).filter_map(move |e| match e {
        Ok(e) if e.team_id == team => Some(e),
        _ => None, // another team's, or missed under load
    });
    let all = tokio_stream::once(connected)
        .chain(live)
        .map(|e| Ok(SseEvent::default().data(serde_json::to_string(&e).unwrap_or_default())));
    Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capsules::model::Capsule;

    #[test]
    fn events_carry_the_capsule_and_skip_what_is_absent() {
        let caller = Caller {
            team_id: "team-1".into(),
            actor_type: wrenn_types::Actor::ApiKey,
            actor_id: "key-1".into(),
            actor_name: "ci".into(),
        };
        let row = crate::db::CapsuleRow {
            id: "cl-1".into(),
            team_id: "team-1".into(),
            template: "minimal".into(),
            status: wrenn_types::CapsuleStatus::Paused,
            vcpus: 1,
            memory_mb: 256,
            disk_size_mb: 0,
            timeout_sec: 0,
            metadata: Default::default(),
            error: None,
            created_at: 0,
            started_at: None,
            last_active_at: None,
            updated_at: 0,
            host_id: None,
        };
        let capsule = Capsule::from(&row);
        let e =
            crate::events::event::capsule_event(&caller, "capsule.pause", "cl-1", capsule.clone());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["sandbox"], serde_json::to_value(&capsule).unwrap());
        assert_eq!(v["sandbox"]["error"], serde_json::Value::Null);
        assert!(v.get("team_id").is_none() && v.get("error").is_none());
        let t = serde_json::to_value(crate::events::event::template_event(
            &caller,
            "template.snapshot.create",
            "x",
        ))
        .unwrap();
        assert!(t.get("sandbox").is_none());
        assert_eq!(t["actor"]["type"], "api_key");
    }
}
