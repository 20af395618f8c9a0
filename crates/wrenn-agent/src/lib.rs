//! wrenn-agent: everything one host does: building templates ([`images`]), network slots
//! ([`netslot`]), capsules owned by one task each ([`capsule`], [`manager`]), the envd
//! client ([`envd_client`]) and the gRPC service ([`service`]), served with `wrenn-rpc`'s
//! listeners and TLS.

pub mod capsule;
pub mod envd_client;
pub mod error;
pub mod forks;
pub mod identity;
pub mod images;
pub mod manager;
pub mod metrics;
pub mod netslot;
pub mod oci_template;
pub mod prereq;
pub mod record;
pub mod run;
pub mod service;
pub mod templates;
pub mod transfer;

/// The slot resolver, a part of each network slot.
pub use netslot::dns;

pub use error::{AgentError, Result};
pub use run::{run, start};
