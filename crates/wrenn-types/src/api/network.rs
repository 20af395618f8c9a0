//! `/v1/capsules/{id}/network`: a capsule's egress.

use serde::{Deserialize, Serialize};

/// A capsule's egress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapsuleNetwork {
    /// Outbound connections at all.
    pub egress: bool,
    /// CIDRs and domain names it may reach (empty: every public address).
    #[cfg_attr(feature = "openapi", schema(example = json!(["example.com", "203.0.113.0/24"])))]
    pub allow: Vec<String>,
    /// CIDRs and domain names it may not reach (beats `allow`).
    #[cfg_attr(feature = "openapi", schema(example = json!(["ads.example.com"])))]
    pub deny: Vec<String>,
}

/// A change to a capsule's egress; absent fields keep their value, a list given replaces the
/// old one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
    #[cfg_attr(feature = "openapi", schema(example = json!(["example.com"])))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
}
