//! envd: Wrenn's guest agent. It runs inside every capsule (and as a plain process for
//! development) and speaks E2B's envd wire protocol, so the published `e2b` SDK drives it
//! unchanged: Connect RPC services `process.Process` and `filesystem.Filesystem`, plus the
//! HTTP endpoints `/health`, `/metrics`, `/envs`, `/init` and `/files`.
//!
//! Layout: [`connect`] is the protocol, [`process`] and [`filesystem`] the services,
//! [`http`] the plain endpoints, [`server`] the router, [`state`] what persists between
//! requests.

pub mod auth;
pub mod connect;
pub mod error;
pub mod filesystem;
pub mod http;
pub mod metrics;
pub mod paths;
pub mod process;
pub mod server;
pub mod state;
pub mod users;

pub use error::{EnvdError, Result};
pub use state::Config;
