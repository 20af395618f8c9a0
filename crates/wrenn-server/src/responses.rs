//! The documented error answers (`#/components/responses/…`), each
//! `{"error":{"code","message"}}`: the handlers' `#[utoipa::path]` blocks name them, and
//! [`crate::api_docs`] registers them.

use std::collections::BTreeMap;

use utoipa::{
    openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder},
    IntoResponses, ToResponse,
};

use crate::error::ErrorBody;

// Reusable error answers (`#/components/responses/…`), each `{"error":{"code","message"}}`.

/// `invalid_request`: malformed JSON, an unknown field, or a value out of range.
#[derive(ToResponse)]
pub struct BadRequest(pub ErrorBody);

/// `unauthorized`: credentials are missing or invalid.
#[derive(ToResponse)]
pub struct Unauthorized(pub ErrorBody);

/// `internal_error`: the server failed (e.g. its database).
#[derive(ToResponse)]
pub struct Internal(pub ErrorBody);

/// `agent_error`: the host agent failed.
#[derive(ToResponse)]
pub struct AgentFailed(pub ErrorBody);

/// `host_unavailable`: no host can take the request (capacity, or the agent is unreachable);
/// `unavailable`: the server's database cannot be reached right now (retry).
#[derive(ToResponse)]
pub struct HostUnavailable(pub ErrorBody);

/// `rate_limited`: too many requests of this kind (failed log-ins, password checks); the
/// `Retry-After` header says how many seconds to wait.
#[derive(ToResponse)]
pub struct RateLimited(pub ErrorBody);

/// `insufficient_storage`: a disk is full (the capsule's, the host's for capsule files, or the
/// server's for its database).
#[derive(ToResponse)]
pub struct InsufficientStorage(pub ErrorBody);

/// `quota_exceeded`: the team's quota would be exceeded (the message names the quota, its
/// limit and the team's use).
#[derive(ToResponse)]
pub struct QuotaExceeded(pub ErrorBody);

// The error answers operations share, each set as one `responses(…)` item of a
// `#[utoipa::path]` (beside the operation's own answers).

/// `#/components/responses/{name}` at each status.
fn refs(list: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, name)| {
            (
                status.to_string(),
                RefOr::Ref(Ref::from_response_name(*name)),
            )
        })
        .collect()
}

/// The answers of a set of statuses, by their documented response names.
macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident: $($status:literal => $response:ident),+) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                refs(&[$(($status, stringify!($response))),+])
            }
        }
    };
}

error_set!(
    /// Any operation that needs credentials: 401, 500.
    Authed: "401" => Unauthorized, "500" => Internal
);
error_set!(
    /// With a body or query to check: 400, 401, 500.
    Checked: "400" => BadRequest, "401" => Unauthorized, "500" => Internal
);
error_set!(
    /// Asks the host agent: 401, 500, 502, 503.
    OnHost: "401" => Unauthorized, "500" => Internal, "502" => AgentFailed,
        "503" => HostUnavailable
);
error_set!(
    /// Checks a body or query, then asks the host agent: 400, 401, 500, 502, 503.
    CheckedOnHost: "400" => BadRequest, "401" => Unauthorized, "500" => Internal,
        "502" => AgentFailed, "503" => HostUnavailable
);

/// An error answer described in place: `description`, with an [`ErrorBody`].
fn described(status: &str, description: &str) -> BTreeMap<String, RefOr<Response>> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build();
    BTreeMap::from([(status.to_string(), RefOr::T(response))])
}

/// `not_found`: the path's capsule is not the team's (or does not exist).
pub struct NoCapsule;

impl IntoResponses for NoCapsule {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        described("404", "`not_found`: no such capsule")
    }
}

/// `invalid_state`: the operation needs a running capsule.
pub struct NotRunning;

impl IntoResponses for NotRunning {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        described("409", "`invalid_state`: the capsule is not running")
    }
}

/// The `{id}` of a capsule's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by the OpenAPI derive only
pub struct CapsulePath {
    /// Capsule id (`cl-…`)
    id: String,
}

/// The `{id}` of a team's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by the OpenAPI derive only
pub struct TeamPath {
    /// Team id (`team-…`)
    id: String,
}

/// `not_found`: the path's host is not within the caller's reach (or does not exist).
pub struct NoHost;

impl IntoResponses for NoHost {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        described("404", "`not_found`: no such host within the caller's reach")
    }
}

/// `forbidden` and `not_found` of an operation that changes the path's host.
pub struct ManagedHost;

impl IntoResponses for ManagedHost {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut out = described("403", "`forbidden`: may see the host but not change it");
        out.extend(NoHost::responses());
        out
    }
}
