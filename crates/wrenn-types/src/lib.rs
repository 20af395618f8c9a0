//! wrenn-types: identifiers and the capsule state machine, shared by the agent, the server
//! and clients. No I/O.

pub mod id;
pub mod state;

pub use id::{Id, IdError, IdKind};
pub use state::{CapsuleState, Transition, TransitionError};
