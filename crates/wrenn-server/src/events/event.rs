//! An event as clients see it (the SDK's `SSEEvent`): the body is wrenn-types'; here is how the
//! control plane makes one.

use std::collections::HashMap;

pub use wrenn_types::api::events::{Actor, Event, EventFrame, EventKind, Resource};

use crate::{capsules::model::Capsule, db::Caller, time::rfc3339};

/// A successful `event` by `caller` on a capsule (with its JSON).
pub fn capsule_event(caller: &Caller, event: &str, id: &str, capsule: Capsule) -> Event {
    by_caller(caller, event, id, "capsule", Some(capsule))
}

/// A successful `event` by `caller` on a template.
pub fn template_event(caller: &Caller, event: &str, name: &str) -> Event {
    by_caller(caller, event, name, "template", None)
}

fn by_caller(
    caller: &Caller,
    event: &str,
    id: &str,
    kind: &str,
    sandbox: Option<Capsule>,
) -> Event {
    Event {
        team_id: caller.team_id.clone(),
        event: event.into(),
        outcome: "success".into(),
        resource: Resource {
            id: id.into(),
            kind: kind.into(),
        },
        actor: Actor {
            kind: caller.actor_type,
            id: caller.actor_id.clone(),
            name: caller.actor_name.clone(),
        },
        metadata: HashMap::new(),
        error: None,
        sandbox,
        timestamp: rfc3339(crate::db::now_ms()),
    }
}
