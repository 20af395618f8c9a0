//! `/v1/events/stream` (the live stream) and `/v1/audit` (the log).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::capsules::Capsule;

/// What an event is about.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resource {
    pub id: String,
    /// `capsule`, `template` or `team`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Who caused an event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Actor {
    /// `user`, `api_key` or `system`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: crate::Actor,
    pub id: String,
    pub name: String,
}

/// The kinds of events (the SDK's enum, and the hosts' events, which only platform admins'
/// streams and a BYOC team's own stream get).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[serde(rename = "host.registered")]
    HostRegistered,
    #[serde(rename = "host.deleted")]
    HostDeleted,
    #[serde(rename = "host.drained")]
    HostDrained,
}

/// One event, as the SDK's `SSEEvent` reads it: the `data:` of one server-sent event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    #[serde(skip)]
    pub team_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = EventKind))]
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
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub timestamp: String,
}

/// One server-sent event as it travels on `text/event-stream` (the schema of each event of the
/// stream, as OpenAPI reads it): its `data` is an [`Event`] as JSON (`#/components/schemas/Event`).
/// Keep-alive comments (`:`) come between events.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventFrame {
    /// An `Event`, as JSON.
    #[cfg_attr(feature = "openapi", schema(content_media_type = "application/json"))]
    pub data: String,
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditActor {
    /// `user`, `api_key` or `system`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// What was acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditResource {
    /// `capsule`, `template`, `team`, `member`, `api_key`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// One action in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: String,
    pub actor: AuditActor,
    #[cfg_attr(feature = "openapi", schema(example = "capsule.create"))]
    pub action: String,
    pub resource: AuditResource,
    /// `success` or `error`.
    pub outcome: String,
    pub detail: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}

/// The team's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditLog {
    /// Newest first, at most `limit` (default and most 500).
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; `null` when there is none.
    pub next_cursor: Option<String>,
}
