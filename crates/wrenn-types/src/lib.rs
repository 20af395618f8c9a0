//! wrenn-types: identifiers and the capsule state machine, shared by the agent, the server
//! and clients. No I/O but the OS random source ([`secret`]).

pub mod egress;
pub mod id;
pub mod secret;
pub mod status;

pub use id::{Id, IdError, IdKind};
pub use status::{CapsuleStatus, Transition, TransitionError};
