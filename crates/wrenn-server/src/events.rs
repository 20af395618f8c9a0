//! Lifecycle events: published on a broadcast channel, streamed to each team as SSE.

use std::{collections::HashMap, convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures_util::Stream;
use serde::Serialize;
use tokio_stream::{wrappers::BroadcastStream, StreamExt};

use crate::{db::Caller, state::AppState, time::rfc3339};

#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub name: String,
}

/// One event, as the SDK's `SSEEvent` reads it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(skip)]
    pub team_id: String,
    pub event: String,
    pub outcome: String,
    pub resource: Resource,
    pub actor: Actor,
    pub metadata: HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<serde_json::Value>,
    pub timestamp: String,
}

impl Event {
    /// A successful `event` by `caller` on a capsule (with its JSON).
    pub fn capsule(caller: &Caller, event: &str, id: &str, capsule: serde_json::Value) -> Event {
        Event {
            team_id: caller.team_id.clone(),
            event: event.into(),
            outcome: "success".into(),
            resource: Resource {
                id: id.into(),
                kind: "capsule".into(),
            },
            actor: Actor {
                kind: caller.actor_type.into(),
                id: caller.actor_id.clone(),
                name: caller.actor_name.clone(),
            },
            metadata: HashMap::new(),
            error: None,
            sandbox: Some(capsule),
            timestamp: rfc3339(crate::db::now_ms()),
        }
    }

    /// A successful `event` by `caller` on a template.
    pub fn template(caller: &Caller, event: &str, name: &str) -> Event {
        Event {
            team_id: caller.team_id.clone(),
            event: event.into(),
            outcome: "success".into(),
            resource: Resource {
                id: name.into(),
                kind: "template".into(),
            },
            actor: Actor {
                kind: caller.actor_type.into(),
                id: caller.actor_id.clone(),
                name: caller.actor_name.clone(),
            },
            metadata: HashMap::new(),
            error: None,
            sandbox: None,
            timestamp: rfc3339(crate::db::now_ms()),
        }
    }
}

/// Publishes an event (nobody listening is fine).
pub fn publish(state: &AppState, event: Event) {
    let _ = state.events.send(event);
}

/// `GET /v1/events/stream`: `connected`, then the caller's team's events as they happen.
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
            kind: caller.actor_type.into(),
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
