//! An event as clients see it (the SDK's `SSEEvent`).

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::{capsules::model::Capsule, db::Caller, time::rfc3339};

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
    #[schema(value_type = String)]
    pub kind: wrenn_types::Actor,
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
                kind: caller.actor_type,
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
                kind: caller.actor_type,
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
