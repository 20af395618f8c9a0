//! Many hosts under one control plane, with real processes on this machine: one `wrenn up`
//! (its built-in host) and up to three `wrenn agent`s registered with tokens, each with its own
//! data folder, network slots and loopback address (127.0.0.2–127.0.0.4). See [`harness`].
//! Needs root (netns, nftables), QEMU and `make images`; runs under the machine-wide VM lock.
//! Network slots 3360–3389.

#[path = "../common/mod.rs"]
mod common;

mod first_need;
mod harness;
mod identity;
mod placement;
mod travel;
