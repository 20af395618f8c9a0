//! Why an agent's gRPC error happened when its code alone cannot say: the metadata entry
//! [`KEY`] of the status. The control plane picks its answer by it (never by message text): a
//! capsule's full disk is not a host out of capacity, and a capsule whose envd fails is not an
//! unreachable host.

/// The metadata key.
pub const KEY: &str = "wrenn-reason";
/// The capsule's disk is full, or another limit inside it was reached.
pub const INSUFFICIENT_STORAGE: &str = "insufficient_storage";
/// The request asks for more than one answer may carry.
pub const TOO_LARGE: &str = "too_large";
/// The capsule (its envd) failed or did not answer; the host is fine.
pub const CAPSULE: &str = "capsule";
