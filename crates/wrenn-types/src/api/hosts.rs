//! `/v1/hosts`: the host agents a control plane places capsules on, their registration,
//! identity (host token, refresh token, mTLS certificate) and heartbeats.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What kind of host: the platform's (`regular`) or one team's own machine (`byoc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    Regular,
    Byoc,
}

impl HostKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            HostKind::Regular => "regular",
            HostKind::Byoc => "byoc",
        }
    }
}

impl std::str::FromStr for HostKind {
    type Err = crate::ParseError;

    fn from_str(s: &str) -> Result<HostKind, crate::ParseError> {
        match s {
            "regular" => Ok(HostKind::Regular),
            "byoc" => Ok(HostKind::Byoc),
            other => Err(crate::ParseError::HostKind(other.to_owned())),
        }
    }
}

/// Where a host is in its life: made but not registered yet, answering, or silent for three
/// heartbeat intervals (its capsules are then `missing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Pending,
    Online,
    Unreachable,
}

impl HostStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            HostStatus::Pending => "pending",
            HostStatus::Online => "online",
            HostStatus::Unreachable => "unreachable",
        }
    }
}

impl std::str::FromStr for HostStatus {
    type Err = crate::ParseError;

    fn from_str(s: &str) -> Result<HostStatus, crate::ParseError> {
        match s {
            "pending" => Ok(HostStatus::Pending),
            "online" => Ok(HostStatus::Online),
            "unreachable" => Ok(HostStatus::Unreachable),
            other => Err(crate::ParseError::HostStatus(other.to_owned())),
        }
    }
}

/// A whole number of type `T` from any JSON number with that value (`8` or `8.0`: JSON
/// Schema's `integer` is a number without a fractional part).
fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Whole(u64),
        Float(f64),
    }
    let value = match Number::deserialize(d)? {
        Number::Whole(v) => Some(v),
        Number::Float(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => {
            Some(f as u64)
        }
        Number::Float(_) => None,
    };
    value
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom("expected a whole number within the field's range"))
}

/// A host's machine, as its agent reports it at registration and in each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostSpecs {
    /// `x86_64`, `aarch64`.
    pub arch: String,
    #[serde(deserialize_with = "whole")]
    pub cpu_cores: u32,
    #[serde(deserialize_with = "whole")]
    pub memory_mb: u64,
    /// Free plus used space of the agent's data folder's file system.
    #[serde(deserialize_with = "whole")]
    pub disk_mb: u64,
    /// The agent's network slot range (`first-last`).
    pub slots: String,
    /// The VMM backend (`qemu`).
    pub vmm: String,
    /// `kvm` or `tcg`.
    pub accel: String,
}

/// A template (and shape) present on a host: the scheduler prefers hosts that hold it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplatePresence {
    /// The host-side name: a base template's name, or a snapshot's host-side id.
    pub name: String,
    /// The shapes it has a snapshot of (`{vcpus}x{memory_mb}`), empty for a snapshot template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shapes: Vec<String>,
}

/// What a host holds now, sent with each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct HostLoad {
    pub running: u32,
    pub paused: u32,
    /// What its capsules were given (running ones; paused ones hold their disk only).
    pub vcpus_reserved: u32,
    pub memory_mb_reserved: u64,
    pub disk_mb_reserved: u64,
    /// What is actually used on the machine.
    pub memory_mb_used: u64,
    pub disk_mb_used: u64,
    /// Load average over one minute, as a fraction of the cores (1.0 = all busy).
    pub cpu_used: f32,
    pub templates: Vec<TemplatePresence>,
    /// The base templates the host builds the first time a create needs one (its agent has
    /// the envd binary), whether built yet or not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buildable: Vec<String>,
}

/// A host as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Host {
    #[cfg_attr(
        feature = "openapi",
        schema(example = "host-0123456789abcdefghijklmno")
    )]
    pub id: String,
    #[serde(rename = "type")]
    pub kind: HostKind,
    /// The owning team of a `byoc` host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
    pub status: HostStatus,
    /// No new capsules are placed on it.
    pub draining: bool,
    /// Where the control plane reaches its agent (empty until registered).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default)]
    pub specs: HostSpecs,
    #[serde(default)]
    pub load: HostLoad,
    pub tags: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<String>,
    pub created_by: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
}

/// `POST /v1/hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateHostBody {
    /// `regular` (platform admins) or `byoc` (an owner or admin of a BYOC team).
    #[serde(rename = "type")]
    pub kind: Option<HostKind>,
    /// The team of a `byoc` host (default: the caller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A host and its registration token (shown once; single use; expires after an hour).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostWithToken {
    pub host: Host,
    pub registration_token: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
}

/// `POST /v1/hosts/register`: the agent's first call, with the token `POST /v1/hosts` gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterHostBody {
    pub token: String,
    /// `host:port` where the control plane reaches the agent (its certificate's SAN): a DNS
    /// name or IPv4 address, and a port 1–65535.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[A-Za-z0-9.-]{1,253}:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$"
        )
    )]
    pub address: String,
    pub specs: HostSpecs,
}

/// `POST /v1/hosts/auth/refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshHostBody {
    pub refresh_token: String,
}

/// A host's identity: the answer to register and refresh. The agent keeps it in
/// `WRENN_DIR/host-credentials.json` (0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostCredentials {
    pub host_id: String,
    /// Sent as `X-Host-Token` with heartbeats; short-lived.
    pub host_token: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub host_token_expires_at: String,
    /// Single use: each refresh answers a new one and revokes this.
    pub refresh_token: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub refresh_token_expires_at: String,
    /// The agent's mTLS server certificate (CN = host id, SAN = its address), PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub cert_expires_at: String,
    /// The control plane's CA: the agent accepts only clients it issued.
    pub ca_cert_pem: String,
}

/// `POST /v1/hosts/{id}/heartbeat` (with `X-Host-Token`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    pub specs: HostSpecs,
    pub load: HostLoad,
}

/// `POST /v1/hosts/{id}/tags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TagBody {
    pub tag: String,
}

/// `GET /v1/hosts/{id}/delete-preview`: what a delete would end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostDeletePreview {
    pub host: Host,
    /// Its capsules that are not stopped.
    pub capsule_ids: Vec<String>,
}

/// `POST /v1/hosts/{id}/drain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// Also move its paused capsules to other hosts.
    #[serde(default)]
    pub move_paused: bool,
}

/// The answer to a drain: which paused capsules moved, and which could not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrainResult {
    pub moved: Vec<String>,
    /// Capsule id → why it stayed.
    pub failed: BTreeMap<String, String>,
}

/// `PUT /v1/admin/teams/{id}/byoc` (platform admins): lets a team have its own hosts. One-way:
/// once on, it stays on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ByocBody {
    pub enabled: bool,
}

/// A team's BYOC flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TeamByoc {
    pub team_id: String,
    pub enabled: bool,
}

/// `POST /v1/capsules/{id}/move`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MoveCapsuleBody {
    /// The host to move to (default: the scheduler's choice among the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_round_trip_as_text() {
        for k in [HostKind::Regular, HostKind::Byoc] {
            assert_eq!(k.as_str().parse::<HostKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in [
            HostStatus::Pending,
            HostStatus::Online,
            HostStatus::Unreachable,
        ] {
            assert_eq!(s.as_str().parse::<HostStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("Regular".parse::<HostKind>().is_err());
        assert!("offline".parse::<HostStatus>().is_err());
    }

    #[test]
    fn a_heartbeat_with_an_unknown_field_is_refused() {
        let ok: HeartbeatBody = serde_json::from_str(r#"{"specs":{"arch":"x86_64","cpu_cores":2,"memory_mb":1,"disk_mb":1,"slots":"1-2","vmm":"qemu","accel":"tcg"},"load":{}}"#).unwrap();
        assert_eq!(ok.specs.cpu_cores, 2);
        assert!(serde_json::from_str::<HeartbeatBody>(r#"{"specs":{},"load":{},"x":1}"#).is_err());
    }
}

#[cfg(test)]
mod whole_numbers {
    use super::HostSpecs;

    fn specs(cores: &str, memory: &str) -> Result<HostSpecs, serde_json::Error> {
        serde_json::from_str(&format!(
            r#"{{"arch":"x86_64","cpu_cores":{cores},"memory_mb":{memory},"disk_mb":8.0,
                "slots":"1-2","vmm":"qemu","accel":"tcg"}}"#
        ))
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats_and_nothing_else_passes() {
        let s = specs("2.0", "4096").unwrap();
        assert_eq!((s.cpu_cores, s.memory_mb, s.disk_mb), (2, 4096, 8));
        assert!(specs("2.5", "1").is_err(), "a fraction");
        assert!(specs("-1", "1").is_err(), "below zero");
        assert!(specs("4294967296", "1").is_err(), "over u32");
        assert!(specs("1", "\"1\"").is_err(), "a string");
        // Exactly a whole number, though a float parsed the quick way comes out as ….5.
        let big = specs("1", "3877875432484598.0").unwrap();
        assert_eq!(big.memory_mb, 3_877_875_432_484_598);
    }
}
