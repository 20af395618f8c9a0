//! Wire contracts shared between Wrenn's components.
//!
//! * [`process`] and [`filesystem`]: E2B's envd services, which Wrenn's `envd` serves so that the
//!   published `e2b` SDK works unchanged. Every message has prost (binary) and pbjson (proto3
//!   JSON) encodings.

#![allow(clippy::all, missing_docs)]

pub mod wkt;

/// `process.Process`: start, attach to and drive processes inside a capsule.
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.rs"));
    include!(concat!(env!("OUT_DIR"), "/process.serde.rs"));
}

/// `filesystem.Filesystem`: inspect and change the capsule's filesystem, and watch it.
pub mod filesystem {
    include!(concat!(env!("OUT_DIR"), "/filesystem.rs"));
    include!(concat!(env!("OUT_DIR"), "/filesystem.serde.rs"));
}

/// Conversions between agent.v1's enums and `wrenn-types` (`CapsuleState` ⇄ `CapsuleStatus`).
#[cfg(feature = "agent")]
mod convert;

/// `agent.v1`: the host agent's gRPC service.
#[cfg(feature = "agent")]
pub mod agent {
    pub mod v1 {
        tonic::include_proto!("agent.v1");
    }
}
