//! The tests' registry and images come from the crate's `testkit` feature; the fake token
//! front is this suite's own.
#![allow(dead_code)]

pub mod token;

pub use wrenn_oci::testkit::{cache_dir, config_for, image, remove_cache, Registry};
