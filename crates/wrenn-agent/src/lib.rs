//! wrenn-agent: everything one host does: building templates ([`images`]), network slots
//! ([`netslot`]), capsules owned by one task each ([`capsule`], [`manager`]), and the envd
//! client ([`envd_client`]).

pub mod capsule;
pub mod envd_client;
pub mod error;
pub mod images;
pub mod manager;
pub mod metrics;
pub mod netslot;
pub mod record;
pub mod service;
pub mod tls;

pub use error::{AgentError, Result};
