//! wrenn-agent: everything one host does. So far: building templates ([`images`]).

pub mod envd_client;
pub mod error;
pub mod images;
pub mod netslot;
pub mod record;

pub use error::{AgentError, Result};
