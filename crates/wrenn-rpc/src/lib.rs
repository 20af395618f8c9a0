//! wrenn-rpc: how the control plane and the host agents reach each other.
//!
//! - [`client`]: an agent's address ([`client::AgentEndpoint`]) and the agent.v1 client over
//!   a Unix socket, plaintext TCP or mutual TLS.
//! - [`listen`]: where a gRPC service listens ([`listen::ListenAddr`], [`listen::Listen`]) and
//!   [`listen::serve`], which serves it there.
//! - [`pki`]: the control plane's CA, which issues the agents' server certificates and its own
//!   client certificates. Agents never sign anything.
//! - [`tls`]: loading an identity a CA issued and the TLS settings of both ends.
//! - [`reason`]: why an agent's gRPC error happened, where its code cannot say.
//!
//! Shared by the control plane, the agent, the CLI and the bench; it knows nothing of VMs or
//! of the database.

pub mod client;
pub mod error;
mod files;
pub mod listen;
pub mod pki;
pub mod reason;
pub mod tls;

pub use client::{connect, connect_lazy, AgentEndpoint};
pub use error::{Result, RpcError};
pub use listen::{serve, Listen, ListenAddr};
