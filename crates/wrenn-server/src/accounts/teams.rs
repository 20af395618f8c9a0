//! Teams and their members, with roles.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};

use super::{
    auth::{acting_in, forbidden, SignedIn},
    rules::{clean_name, normalize_email},
};
use crate::{
    db::{self, Role},
    error::{ApiError, ErrorBody, Result},
    extract::JsonBody,
    responses::{Authed, Checked},
    state::AppState,
    time::rfc3339,
};

pub use wrenn_types::api::teams::{
    AddMemberBody, Member, RoleBody, Team, TeamBody, TeamMembership,
};

/// A team as the API shows it, with the caller's role in it.
pub(crate) fn team_of(t: &db::Team, role: Role) -> Team {
    Team {
        id: t.id.clone(),
        name: t.name.clone(),
        created_at: rfc3339(t.created_at),
        role,
    }
}

/// A team the caller belongs to, as the API shows it.
pub(crate) fn membership_of(m: &db::Membership) -> TeamMembership {
    TeamMembership {
        team: team_of(&m.team, m.role),
        joined_at: rfc3339(m.joined_at),
    }
}

/// A team's member, as the API shows them.
pub(crate) fn member_of(m: &db::Member) -> Member {
    Member {
        user_id: m.user.id.clone(),
        email: m.user.email.clone(),
        name: m.user.name.clone(),
        role: m.role,
        joined_at: rfc3339(m.joined_at),
    }
}

/// Whether an actor with role `actor` may change a member whose role is `from` to `to`
/// (`None`: remove them). `is_self`: the member is the actor. The last-owner rule is the
/// database's ([`crate::db::Db::set_member_role`]), checked atomically with the change.
pub fn may_change_member(actor: Role, is_self: bool, from: Role, to: Option<Role>) -> Result<()> {
    match to {
        None if from == Role::Owner => {
            if actor == Role::Owner {
                Err(ApiError::Conflict(
                    "an owner cannot be removed; change their role first".into(),
                ))
            } else {
                Err(forbidden("removing an owner"))
            }
        }
        // Leaving a team.
        None if is_self => Ok(()),
        None if actor == Role::Owner || (actor == Role::Admin && from == Role::Member) => Ok(()),
        None => Err(forbidden("removing this member")),
        Some(to) if from == Role::Owner || to == Role::Owner => {
            if actor == Role::Owner {
                Ok(())
            } else {
                Err(forbidden("changing ownership"))
            }
        }
        Some(_) if actor == Role::Owner => Ok(()),
        // Admins promote plain members, and may step down themselves.
        Some(_) if actor == Role::Admin && (from == Role::Member || is_self) => Ok(()),
        Some(_) => Err(forbidden("changing this member's role")),
    }
}

/// List my teams
///
/// The signed-in user's teams with their role, in the order they joined.
#[utoipa::path(
    get,
    path = "/v1/teams",
    operation_id = "list_teams",
    tag = "teams",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Their teams", body = Vec<TeamMembership>),
        Authed,
        (status = 403, description = "`forbidden`: an API key (teams need a signed-in user)", body = ErrorBody),
    )
)]
pub async fn list_teams(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
) -> Result<Json<Vec<TeamMembership>>> {
    let teams = state.db.memberships(&user.id).await?;
    Ok(Json(teams.iter().map(membership_of).collect()))
}

/// Create a team
///
/// A team the signed-in user owns.
#[utoipa::path(
    post,
    path = "/v1/teams",
    operation_id = "create_team",
    tag = "teams",
    security(("bearer" = [])),
    request_body = TeamBody,
    responses(
        (status = 201, description = "The team", body = TeamMembership),
        Checked,
        (status = 403, description = "`forbidden`: an API key (teams need a signed-in user)", body = ErrorBody),
    )
)]
pub async fn create_team(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    JsonBody(b): JsonBody<TeamBody>,
) -> Result<(StatusCode, Json<TeamMembership>)> {
    let name = clean_name(&b.name, "name")?;
    let m = state.db.create_owned_team(&user, &name).await?;
    Ok((StatusCode::CREATED, Json(membership_of(&m))))
}

/// List a team's members
///
/// Any member may.
#[utoipa::path(
    get,
    path = "/v1/teams/{id}/members",
    operation_id = "list_members",
    tag = "teams",
    security(("bearer" = [])),
    params(crate::responses::TeamPath),
    responses(
        (status = 200, description = "Its members", body = Vec<Member>),
        Authed,
        (status = 403, description = "`forbidden`: an API key (teams need a signed-in user)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's", body = ErrorBody),
    )
)]
pub async fn list_members(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(team_id): Path<String>,
) -> Result<Json<Vec<Member>>> {
    acting_in(&state, &user, &team_id).await?;
    let members = state.db.members(&team_id).await?;
    Ok(Json(members.iter().map(member_of).collect()))
}

/// Add a member
///
/// Admins and owners add existing users as `member` or `admin`.
#[utoipa::path(
    post,
    path = "/v1/teams/{id}/members",
    operation_id = "add_member",
    tag = "teams",
    security(("bearer" = [])),
    params(crate::responses::TeamPath),
    request_body = AddMemberBody,
    responses(
        (status = 201, description = "The new member", body = Member),
        Checked,
        (status = 403, description = "`forbidden`: an API key, or the user's role does not allow it", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's, or no user with that email", body = ErrorBody),
        (status = 409, description = "`conflict`: already a member", body = ErrorBody),
    )
)]
pub async fn add_member(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(team_id): Path<String>,
    JsonBody(b): JsonBody<AddMemberBody>,
) -> Result<(StatusCode, Json<Member>)> {
    let (caller, actor) = acting_in(&state, &user, &team_id).await?;
    if actor < Role::Admin {
        return Err(forbidden("adding members"));
    }
    let role = match b.role.as_deref().unwrap_or("member") {
        "member" => Role::Member,
        "admin" => Role::Admin,
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "role must be admin or member, not {other:?} (owners are made by an owner \
                 changing a member's role)"
            )))
        }
    };
    let email = normalize_email(&b.email)?;
    let (added, _) = state
        .db
        .user_by_email(&email)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user has the email {email}")))?;
    state.db.add_member(&caller, &added.id, role).await?;
    let m = state
        .db
        .member(&team_id, &added.id)
        .await?
        .ok_or_else(|| ApiError::Internal("the new member vanished".into()))?;
    Ok((StatusCode::CREATED, Json(member_of(&m))))
}

/// Change a member's role
///
/// Admins manage plain members; only owners touch admins and owners; the last owner cannot
/// step down.
#[utoipa::path(
    patch,
    path = "/v1/teams/{id}/members/{user_id}",
    operation_id = "set_member_role",
    tag = "teams",
    security(("bearer" = [])),
    params(
        crate::responses::TeamPath,
        ("user_id" = String, Path, description = "The member's user id (`usr-…`)"),
    ),
    request_body = RoleBody,
    responses(
        (status = 200, description = "The member", body = Member),
        Checked,
        (status = 403, description = "`forbidden`: an API key, or the user's role does not allow it", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's, or not a member", body = ErrorBody),
        (status = 409, description = "`conflict`: the last owner, or the role changed meanwhile", body = ErrorBody),
    )
)]
pub async fn set_member_role(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path((team_id, member_id)): Path<(String, String)>,
    JsonBody(b): JsonBody<RoleBody>,
) -> Result<Json<Member>> {
    let (caller, actor) = acting_in(&state, &user, &team_id).await?;
    let to = Role::parse(&b.role).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "role must be owner, admin or member, not {:?}",
            b.role
        ))
    })?;
    let target = state
        .db
        .member(&team_id, &member_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {member_id} is not a member")))?;
    may_change_member(actor, member_id == user.id, target.role, Some(to))?;
    if target.role != to {
        state
            .db
            .set_member_role(&caller, &member_id, target.role, to)
            .await?;
    }
    let m = state
        .db
        .member(&team_id, &member_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {member_id} is not a member")))?;
    Ok(Json(member_of(&m)))
}

/// Remove a member
///
/// Or leave (anyone but an owner). Owners are never removed: demote them first. The API keys
/// the member owns in this team are deleted with their membership (audited), so a removed
/// member's keys stop working at once.
#[utoipa::path(
    delete,
    path = "/v1/teams/{id}/members/{user_id}",
    operation_id = "remove_member",
    tag = "teams",
    security(("bearer" = [])),
    params(
        crate::responses::TeamPath,
        ("user_id" = String, Path, description = "The member's user id (`usr-…`)"),
    ),
    responses(
        (status = 204, description = "Removed"),
        Authed,
        (status = 403, description = "`forbidden`: an API key, or the user's role does not allow it", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's, or not a member", body = ErrorBody),
        (status = 409, description = "`conflict`: an owner (change their role first)", body = ErrorBody),
    )
)]
pub async fn remove_member(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path((team_id, member_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let (caller, actor) = acting_in(&state, &user, &team_id).await?;
    let target = state
        .db
        .member(&team_id, &member_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {member_id} is not a member")))?;
    may_change_member(actor, member_id == user.id, target.role, None)?;
    state
        .db
        .remove_member(&caller, &member_id, target.role)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    fn code(r: Result<()>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.status_and_code().1,
        }
    }

    #[test]
    fn member_rights_table() {
        // (actor, self?, from, to (None = remove), answer)
        let table = [
            // Members change nobody, but may leave.
            (Member, false, Member, Some(Admin), "forbidden"),
            (Member, true, Member, Some(Admin), "forbidden"),
            (Member, false, Member, None, "forbidden"),
            (Member, true, Member, None, "ok"),
            (Member, false, Owner, None, "forbidden"),
            // Admins manage plain members, never admins or owners.
            (Admin, false, Member, Some(Admin), "ok"),
            (Admin, false, Member, Some(Member), "ok"),
            (Admin, false, Member, Some(Owner), "forbidden"),
            (Admin, false, Admin, Some(Member), "forbidden"),
            (Admin, true, Admin, Some(Member), "ok"),
            (Admin, true, Admin, Some(Owner), "forbidden"),
            (Admin, false, Owner, Some(Member), "forbidden"),
            (Admin, false, Member, None, "ok"),
            (Admin, false, Admin, None, "forbidden"),
            (Admin, true, Admin, None, "ok"),
            (Admin, false, Owner, None, "forbidden"),
            // Owners do anything but remove an owner (demote first).
            (Owner, false, Member, Some(Owner), "ok"),
            (Owner, false, Admin, Some(Member), "ok"),
            (Owner, false, Owner, Some(Admin), "ok"),
            (Owner, true, Owner, Some(Member), "ok"),
            (Owner, false, Admin, None, "ok"),
            (Owner, false, Owner, None, "conflict"),
            (Owner, true, Owner, None, "conflict"),
        ];
        for (actor, is_self, from, to, want) in table {
            assert_eq!(
                code(may_change_member(actor, is_self, from, to)),
                want,
                "{actor:?} self={is_self} {from:?} -> {to:?}"
            );
        }
    }
}
