//! Lifecycle events: published on a broadcast channel, streamed to each team as SSE.

use std::{collections::HashMap, convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures_util::Stream;
use serde::Serialize;
use tokio_stream::{wrappers::BroadcastStream, StreamExt};
use utoipa::ToSchema;

use crate::{
    api_docs::{Internal, Unauthorized},
    capsules::Capsule,
    db::Caller,
    state::AppState,
    time::rfc3339,
};

/// What an event is about.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Resource {
    pub id: String,
    /// `capsule`, `template` or `team`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Who caused an event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Actor {
    /// `user`, `api_key` or `system`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub name: String,
}

/// The kinds of events (the SDK's enum; `host.up` and `host.down` are not sent yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum EventKind {
    #[serde(rename = "connected")]
    Connected,
    #[serde(rename = "capsule.create")]
    CapsuleCreate,
    #[serde(rename = "capsule.pause")]
    CapsulePause,
    #[serde(rename = "capsule.resume")]
    CapsuleResume,
    #[serde(rename = "capsule.destroy")]
    CapsuleDestroy,
    #[serde(rename = "capsule.state.changed")]
    CapsuleStatusChanged,
    #[serde(rename = "template.snapshot.create")]
    TemplateSnapshotCreate,
    #[serde(rename = "template.snapshot.delete")]
    TemplateSnapshotDelete,
    #[serde(rename = "host.up")]
    HostUp,
    #[serde(rename = "host.down")]
    HostDown,
}

/// One event, as the SDK's `SSEEvent` reads it: the `data:` of one server-sent event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Event {
    #[serde(skip)]
    pub team_id: String,
    #[schema(value_type = EventKind)]
    pub event: String,
    /// `success` or `error`.
    pub outcome: String,
    pub resource: Resource,
    pub actor: Actor,
    pub metadata: HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The capsule after the change (capsule events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Capsule>,
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// One server-sent event as it travels on `text/event-stream` (the schema of each event of the
/// stream, as OpenAPI reads it): its `data` is an [`Event`] as JSON (`#/components/schemas/Event`).
/// Keep-alive comments (`:`) come between events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventFrame {
    /// An `Event`, as JSON.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

impl Event {
    /// A successful `event` by `caller` on a capsule (with its JSON).
    pub fn capsule(caller: &Caller, event: &str, id: &str, capsule: Capsule) -> Event {
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
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_capsule_and_skip_what_is_absent() {
        let caller = Caller {
            team_id: "team-1".into(),
            actor_type: "api_key",
            actor_id: "key-1".into(),
            actor_name: "ci".into(),
        };
        let row = crate::db::CapsuleRow {
            id: "cl-1".into(),
            team_id: "team-1".into(),
            template: "minimal".into(),
            status: "paused".into(),
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
        };
        let capsule = Capsule::from(&row);
        let e = Event::capsule(&caller, "capsule.pause", "cl-1", capsule.clone());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["sandbox"], serde_json::to_value(&capsule).unwrap());
        assert_eq!(v["sandbox"]["error"], serde_json::Value::Null);
        assert!(v.get("team_id").is_none() && v.get("error").is_none());
        let t = serde_json::to_value(Event::template(&caller, "template.snapshot.create", "x"))
            .unwrap();
        assert!(t.get("sandbox").is_none());
        assert_eq!(t["actor"]["type"], "api_key");
    }
}
