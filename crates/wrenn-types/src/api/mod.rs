//! The REST API's request and response bodies, by area. The server serializes and parses
//! these; `wrenn-client` sends the request bodies. With the crate's `openapi` feature each
//! derives `utoipa::ToSchema` (the server's OpenAPI document); the doc comments are the
//! schemas' descriptions.

pub mod accounts;
pub mod admin;
pub mod builds;
pub mod capsules;
pub mod errors;
pub mod events;
pub mod files;
pub mod hosts;
pub mod network;
pub mod quotas;
pub mod teams;
pub mod templates;
pub mod usage;
