//! OCI images into root filesystems, without a container daemon: image references
//! (`reference`), the distribution API v2 client with anonymous, Basic and Bearer-token auth
//! (`client`, `auth`), manifests, indexes and platform choice (`manifest`), layer unpacking
//! with whiteouts and path safety (`unpack`, `rootpath`), and a digest-keyed cache (`cache`)
//! kept under a size, least recently used first, never an image in use (`evict`).
//! [`Puller::pull`] ties them together. See docs/oci.md.

pub mod auth;
pub mod cache;
pub mod client;
pub mod config;
pub mod digest;
pub mod error;
pub mod evict;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod rootpath;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod unpack;

pub use config::{OciConfig, Platform, RegistrySettings};
pub use digest::Digest;
pub use error::{OciError, Result};
pub use manifest::{ImageConfig, RunConfig};
pub use pull::{Image, Progress, Puller};
pub use reference::Reference;
