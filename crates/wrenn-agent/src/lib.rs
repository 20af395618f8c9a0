//! wrenn-agent: everything one host does. So far: building templates ([`images`]).

pub mod error;
pub mod images;

pub use error::{AgentError, Result};
