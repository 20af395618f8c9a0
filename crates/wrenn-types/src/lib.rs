//! wrenn-types: the vocabulary shared by the agent, the server and clients: identifiers, the
//! capsule state machine, template names, actors and the REST API's bodies ([`api`]). No I/O but
//! the OS random source ([`secret`]). With the `openapi` feature the API types derive
//! `utoipa::ToSchema`.

pub mod actor;
pub mod api;
pub mod egress;
pub mod error;
pub mod id;
pub mod recipe;
pub mod secret;
pub mod status;
pub mod template;

pub use actor::Actor;
pub use error::ParseError;
pub use id::{Id, IdError, IdKind};
pub use status::{CapsuleStatus, Transition, TransitionError};
pub use template::TemplateName;
