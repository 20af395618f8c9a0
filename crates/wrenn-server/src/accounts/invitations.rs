//! Invitations: a team's owners and admins invite people to sign up into the team (the
//! `invite` sign-up policy needs one; `open` accepts one too). An invitation is a token
//! (`wri_` + 32 hex, shown once, stored as its SHA-256), single use, with an expiry; signing up
//! with it makes the account a member of the team with the invitation's role.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};

use super::{
    auth::{acting_in, forbidden, SignedIn},
    policy::SignupPolicy,
};
use crate::extract::JsonBody;
use crate::{
    db::{self, now_ms, Role},
    error::{ApiError, ErrorBody, Result},
    responses::{Authed, Checked},
    state::AppState,
    time::rfc3339,
};
pub use wrenn_types::api::accounts::{CreatedInvitation, Invitation, InvitationBody};

/// Default validity of an invitation (7 days).
pub const DEFAULT_HOURS: i64 = 7 * 24;
/// Longest validity (30 days).
pub const MAX_HOURS: i64 = 30 * 24;

impl From<&db::Invitation> for Invitation {
    fn from(i: &db::Invitation) -> Invitation {
        Invitation {
            id: i.id.clone(),
            team_id: i.team_id.clone(),
            role: i.role,
            created_by: i.created_by.clone(),
            created_at: rfc3339(i.created_at),
            expires_at: rfc3339(i.expires_at),
            used_by: i.used_by.clone(),
            used_at: i.used_at.map(rfc3339),
        }
    }
}

/// `user` managing `team_id`'s invitations: an admin or owner.
async fn manager(state: &AppState, user: &db::User, team_id: &str) -> Result<db::Caller> {
    let (caller, role) = acting_in(state, user, team_id).await?;
    if role < Role::Admin {
        return Err(forbidden("managing invitations"));
    }
    Ok(caller)
}

/// Invite someone
///
/// An invitation to sign up into the team (admins and owners; as `member` or `admin`). The
/// token is shown this once; it works once, until it expires.
#[utoipa::path(
    post,
    path = "/v1/teams/{id}/invitations",
    operation_id = "create_invitation",
    tag = "teams",
    security(("bearer" = [])),
    params(crate::responses::TeamPath),
    request_body = InvitationBody,
    responses(
        (status = 201, description = "The invitation, with its token", body = CreatedInvitation),
        Checked,
        (status = 403, description = "`forbidden`: an API key, a plain member, or sign-up is closed on this server", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's", body = ErrorBody),
    )
)]
pub async fn create_invitation(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(team_id): Path<String>,
    JsonBody(b): JsonBody<InvitationBody>,
) -> Result<(StatusCode, Json<CreatedInvitation>)> {
    let caller = manager(&state, &user, &team_id).await?;
    if state.accounts.signup == SignupPolicy::Closed {
        return Err(ApiError::Forbidden(
            "sign-up is closed on this server, so invitations cannot be used; add existing \
             users with POST /v1/teams/{id}/members"
                .into(),
        ));
    }
    let role = match b.role.as_deref().unwrap_or("member") {
        "member" => Role::Member,
        "admin" => Role::Admin,
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "role must be admin or member, not {other:?}"
            )))
        }
    };
    let hours = b.expires_in_hours.unwrap_or(DEFAULT_HOURS);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(ApiError::InvalidRequest(format!(
            "expires_in_hours must be 1 to {MAX_HOURS}, not {hours}"
        )));
    }
    let (inv, token) = state
        .db
        .create_invitation(&caller, role, now_ms() + hours * 3_600_000)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvitation {
            invitation: Invitation::from(&inv),
            token,
        }),
    ))
}

/// List invitations
///
/// The team's invitations, newest first, used and expired ones too (admins and owners).
#[utoipa::path(
    get,
    path = "/v1/teams/{id}/invitations",
    operation_id = "list_invitations",
    tag = "teams",
    security(("bearer" = [])),
    params(crate::responses::TeamPath),
    responses(
        (status = 200, description = "The invitations", body = Vec<Invitation>),
        Authed,
        (status = 403, description = "`forbidden`: an API key or a plain member", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's", body = ErrorBody),
    )
)]
pub async fn list_invitations(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(team_id): Path<String>,
) -> Result<Json<Vec<Invitation>>> {
    manager(&state, &user, &team_id).await?;
    let all = state.db.invitations(&team_id).await?;
    Ok(Json(all.iter().map(Invitation::from).collect()))
}

/// Withdraw an invitation
///
/// Its token stops working (admins and owners).
#[utoipa::path(
    delete,
    path = "/v1/teams/{id}/invitations/{invitation_id}",
    operation_id = "delete_invitation",
    tag = "teams",
    security(("bearer" = [])),
    params(
        crate::responses::TeamPath,
        ("invitation_id" = String, Path, description = "Invitation id (`inv-…`)"),
    ),
    responses(
        (status = 204, description = "Withdrawn"),
        Authed,
        (status = 403, description = "`forbidden`: an API key or a plain member", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's, or no such invitation", body = ErrorBody),
    )
)]
pub async fn delete_invitation(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path((team_id, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let caller = manager(&state, &user, &team_id).await?;
    state.db.delete_invitation(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
