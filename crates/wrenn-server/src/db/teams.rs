//! Teams, their members and roles. Every change to a team's accounts takes the acting
//! `Caller` (its `team_id` is the team changed) and writes its audit row in the same
//! transaction, so no change is ever unaudited.

use sqlx::{AnyConnection, Row};
use wrenn_types::{Id, IdKind};

use super::tx::{audit_success, lock_team};
use super::users::{insert_user, USER_COLUMNS};
use sqlx::FromRow;

use super::*;
use crate::error::{ApiError, Result};

pub use wrenn_types::api::teams::Role;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// A team as one of its members sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Membership {
    #[sqlx(flatten)]
    pub team: Team,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub joined_at: i64,
}

/// A team's member.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Member {
    #[sqlx(flatten)]
    pub user: User,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub joined_at: i64,
}

pub(super) fn role_of(r: &sqlx::any::AnyRow) -> Result<Role> {
    let role: String = r.try_get("role")?;
    Role::parse(&role).ok_or_else(|| ApiError::Internal(format!("unknown role {role:?} stored")))
}

pub(super) async fn insert_team(conn: &mut AnyConnection, name: &str) -> Result<Team> {
    let team = Team {
        id: Id::new(IdKind::Team).to_string(),
        name: name.into(),
        created_at: now_ms(),
    };
    sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&team.id)
        .bind(&team.name)
        .bind(team.created_at)
        .execute(conn)
        .await?;
    Ok(team)
}

pub(super) async fn insert_membership(
    conn: &mut AnyConnection,
    team_id: &str,
    user_id: &str,
    role: Role,
) -> Result<i64> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO memberships (team_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(team_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(now)
}

/// A member's current role, read under the team lock.
pub(super) async fn role_in(
    conn: &mut AnyConnection,
    team_id: &str,
    user_id: &str,
) -> Result<Option<Role>> {
    sqlx::query("SELECT role FROM memberships WHERE team_id = $1 AND user_id = $2")
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(role_of)
        .transpose()
}

pub(super) async fn owners(conn: &mut AnyConnection, team_id: &str) -> Result<i64> {
    let r = sqlx::query("SELECT COUNT(*) AS n FROM memberships WHERE team_id = $1 AND role = $2")
        .bind(team_id)
        .bind(Role::Owner.as_str())
        .fetch_one(conn)
        .await?;
    Ok(r.try_get("n")?)
}

pub(super) fn member_not_found(user_id: &str) -> ApiError {
    ApiError::NotFound(format!("user {user_id} is not a member of this team"))
}

pub(super) fn role_changed() -> ApiError {
    ApiError::Conflict("the member's role changed meanwhile; try again".into())
}

/// The name of the platform team's setting.
const PLATFORM_TEAM: &str = "platform_team";

impl Db {
    /// Signs a user up: the user, a personal team they own, and the audit row, all or nothing.
    /// A taken email is `conflict`.
    pub async fn create_user_with_team(
        &self,
        email: &str,
        name: &str,
        password_hash: &str,
        team_name: &str,
    ) -> Result<(User, Team)> {
        let mut tx = self.pool.begin().await?;
        let user = insert_user(&mut tx, email, name, password_hash).await?;
        let team = insert_team(&mut tx, team_name).await?;
        insert_membership(&mut tx, &team.id, &user.id, Role::Owner).await?;
        // The first account of an install makes the platform's team.
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(PLATFORM_TEAM)
        .bind(&team.id)
        .execute(&mut *tx)
        .await?;
        let caller = Caller::user(&team.id, &user);
        audit_success(&mut tx, &caller, "user.signup", ("user", &user.id), "").await?;
        tx.commit().await?;
        Ok((user, team))
    }

    /// The platform's team: its owners and admins administer the platform (hosts, quotas,
    /// BYOC). The team of `admin@localhost` when the server made it, else the team of the
    /// install's first account.
    pub async fn platform_team(&self) -> Result<Option<String>> {
        let r = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(PLATFORM_TEAM)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => Some(r.try_get("value")?),
            None => None,
        })
    }

    /// Makes `team_id` the platform's team (the server's first start, for its admin's team).
    pub async fn set_platform_team(&self, team_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(PLATFORM_TEAM)
        .bind(team_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn create_team(&self, name: &str) -> Result<Team> {
        let mut conn = self.pool.acquire().await?;
        insert_team(&mut conn, name).await
    }

    pub async fn team_count(&self) -> Result<i64> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM teams")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("n")?)
    }

    /// The teams a user belongs to, in the order they joined (the personal team first).
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT t.id, t.name, t.created_at, m.role, m.created_at AS joined_at \
             FROM memberships m JOIN teams t ON t.id = m.team_id \
             WHERE m.user_id = $1 ORDER BY m.created_at, CASE WHEN m.role = 'owner' THEN 0 ELSE 1 END, t.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(Membership::from_row(r)?)).collect()
    }

    /// A user's role in a team, `None` when not a member (or no such team).
    pub async fn role(&self, team_id: &str, user_id: &str) -> Result<Option<Role>> {
        let mut conn = self.pool.acquire().await?;
        role_in(&mut conn, team_id, user_id).await
    }

    /// A new team owned by `user` (audited in the new team's log).
    pub async fn create_owned_team(&self, user: &User, name: &str) -> Result<Membership> {
        let mut tx = self.pool.begin().await?;
        let team = insert_team(&mut tx, name).await?;
        let joined_at = insert_membership(&mut tx, &team.id, &user.id, Role::Owner).await?;
        let caller = Caller::user(&team.id, user);
        audit_success(&mut tx, &caller, "team.create", ("team", &team.id), name).await?;
        tx.commit().await?;
        Ok(Membership {
            team,
            role: Role::Owner,
            joined_at,
        })
    }

    /// A team's members, in the order they joined.
    pub async fn members(&self, team_id: &str) -> Result<Vec<Member>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, m.role, m.created_at AS joined_at \
             FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.team_id = $1 ORDER BY m.created_at, u.email"
        ))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(Member::from_row(r)?)).collect()
    }

    /// One member of a team, `None` when the user is not in it.
    pub async fn member(&self, team_id: &str, user_id: &str) -> Result<Option<Member>> {
        let r = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, m.role, m.created_at AS joined_at \
             FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.team_id = $1 AND m.user_id = $2"
        ))
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| Ok(Member::from_row(&r)?)).transpose()
    }

    /// Adds `user_id` to `by`'s team as `role`; `conflict` when already a member.
    pub async fn add_member(&self, by: &Caller, user_id: &str, role: Role) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if !lock_team(&mut tx, &by.team_id).await? {
            return Err(ApiError::NotFound(format!("team {} not found", by.team_id)));
        }
        if role_in(&mut tx, &by.team_id, user_id).await?.is_some() {
            return Err(ApiError::Conflict(
                "this user is already a member of the team".into(),
            ));
        }
        insert_membership(&mut tx, &by.team_id, user_id, role).await?;
        let detail = format!("role={}", role.as_str());
        audit_success(&mut tx, by, "team.member.add", ("user", user_id), &detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes a member's role from `from` (what the caller's permission check saw) to `to`.
    /// `not_found` when not a member; `conflict` when the role changed meanwhile or when this
    /// would leave the team without an owner.
    pub async fn set_member_role(
        &self,
        by: &Caller,
        user_id: &str,
        from: Role,
        to: Role,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        match role_in(&mut tx, &by.team_id, user_id).await? {
            None => return Err(member_not_found(user_id)),
            Some(now) if now != from => return Err(role_changed()),
            Some(_) => {}
        }
        if from == Role::Owner && to != Role::Owner && owners(&mut tx, &by.team_id).await? <= 1 {
            return Err(ApiError::Conflict(
                "the team's last owner cannot step down; make another member owner first".into(),
            ));
        }
        sqlx::query("UPDATE memberships SET role = $1 WHERE team_id = $2 AND user_id = $3")
            .bind(to.as_str())
            .bind(&by.team_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        audit_success(
            &mut tx,
            by,
            "team.member.role",
            ("user", user_id),
            &format!("role={}->{}", from.as_str(), to.as_str()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a member whose role is `from` (what the permission check saw). Owners are never
    /// removed (demote first), so a team always keeps an owner.
    pub async fn remove_member(&self, by: &Caller, user_id: &str, from: Role) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        match role_in(&mut tx, &by.team_id, user_id).await? {
            None => return Err(member_not_found(user_id)),
            Some(Role::Owner) => {
                return Err(ApiError::Conflict(
                    "an owner cannot be removed; change their role first".into(),
                ))
            }
            Some(now) if now != from => return Err(role_changed()),
            Some(_) => {}
        }
        sqlx::query("DELETE FROM memberships WHERE team_id = $1 AND user_id = $2")
            .bind(&by.team_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let detail = format!("role={}", from.as_str());
        audit_success(
            &mut tx,
            by,
            "team.member.remove",
            ("user", user_id),
            &detail,
        )
        .await?;
        // Their API keys in this team die with their membership.
        let keys = sqlx::query("SELECT id FROM api_keys WHERE team_id = $1 AND owner_id = $2")
            .bind(&by.team_id)
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        for k in &keys {
            let id: String = k.try_get("id")?;
            sqlx::query("DELETE FROM api_keys WHERE team_id = $1 AND id = $2")
                .bind(&by.team_id)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            audit_success(
                &mut tx,
                by,
                "api_key.delete",
                ("api_key", &id),
                &format!("its owner {user_id} left the team"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
