//! wrenn-agent: everything one host does: building templates ([`images`]), network slots
//! ([`netslot`]), capsules owned by one task each ([`capsule`], [`manager`]), the envd
//! client ([`envd_client`]), the gRPC service ([`service`]) and how it is reached ([`listen`],
//! [`client`], [`tls`]).

pub mod capsule;
pub mod client;
pub mod dns;
pub mod envd_client;
pub mod error;
pub mod images;
pub mod listen;
pub mod manager;
pub mod metrics;
pub mod netslot;
pub mod prereq;
pub mod record;
pub mod service;
pub mod templates;
pub mod tls;

pub use error::{AgentError, Result};
