//! A registered host's identity, on the agent's side: `wrenn agent --register TOKEN
//! --control-plane URL --address HOST:PORT` trades the registration token for a host identity
//! ([`register`]), kept in [`credentials`]; [`heartbeat`] then reports the host's specs and load,
//! refreshes the identity before it runs out (swapping the TLS certificate in place), and stops
//! the agent when the control plane deleted the host.

pub mod credentials;
pub mod heartbeat;
pub mod register;

pub use credentials::StoredCredentials;
pub use heartbeat::{Ending, Heartbeats};
pub use register::register;
