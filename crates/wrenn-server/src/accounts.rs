//! Accounts: sign-up and log-in (argon2id passwords, 24 h HS256 user tokens), teams and their
//! members with roles, API keys, and who a request comes from ([`authenticate`]).
//!
//! Credentials. `X-API-Key: wrn_…` or `Authorization: Bearer wrn_…` is an API key: it acts
//! in its own team. `Authorization: Bearer <token>` (from sign-up or log-in) is a signed-in
//! user: they act in the team named by `X-Team-Id` (they must be a member; otherwise the team
//! is `not_found`, so other teams' existence never leaks) or else in their first team (the
//! personal one made at sign-up). Roles are read from the database on every request, never
//! from the token, so a role change or a removal takes effect at once.
//!
//! Rights. Roles rank owner > admin > member.
//! * Teams and members (`/v1/teams…`) need a signed-in user; API keys get `forbidden` (a key
//!   must never be able to give anyone access to a team). Any member reads the member list;
//!   admins and owners add members (as admin or member) and remove or promote plain members;
//!   only owners change an admin's or owner's role or make owners. Owners are never removed
//!   (demote first), and the last owner cannot be demoted. Anyone but an owner may leave.
//! * API keys (`/v1/api-keys`): any member or key of the team lists them (never the secret or
//!   its hash); creating and deleting needs an admin or owner, or an API key of the team (the
//!   key `wrenn up` prints must be able to make more). A key's plaintext is shown once; the
//!   database holds only its SHA-256.
//! * A key dies with its owner's membership: a key made by a user is theirs, a key made by a
//!   key belongs to that key's owner; removing a member (or a member leaving) deletes their
//!   keys in that team, in the same transaction, audited. Keys with no owner (the admin key
//!   the server makes at its first start, and keys it made) belong to the team. The admin key
//!   cannot be deleted through the API (`conflict`); the server replaces it when its file is
//!   missing or its key no longer works ([`crate::bootstrap`]).
//! * User tokens are sessions: valid 24 h unless logged out (`/v1/auth/logout`, or
//!   `/v1/auth/logout-all` for all of a user's tokens), checked on every request.
//! * Sign-up follows the server's [`SignupPolicy`] and never tells which emails have
//!   accounts; passwords follow [`check_password`]; failed log-ins are limited per account and
//!   per client address ([`limits`]); password hashing is a bounded pool ([`password`]).
//! * Every change is written to the team's audit log in the same transaction.
//!
//! Not found and forbidden: a team, member or key outside the caller's reach is `not_found`;
//! `forbidden` only ever answers members of the team about their own team.

pub mod auth;
pub mod common_passwords;
pub mod console_session;
pub mod cookie;
pub mod invitations;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod password;
pub mod policy;
pub mod rules;
pub mod sessions;
pub mod teams;

pub use auth::{authenticate, authenticate_token, ClientAddr, SignedIn};
pub use policy::{Accounts, SignupPolicy};
pub use rules::{check_password, normalize_email, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
pub use teams::may_change_member;

#[cfg(test)]
mod tests {
    use super::{
        keys::{ApiKey, CreatedApiKey},
        sessions::{LoginResponse, Token, User},
    };
    use crate::{
        db::{self, ApiKeyRow, Role},
        time::rfc3339,
    };

    #[test]
    fn account_shapes_are_unchanged() {
        use serde_json::json;

        use crate::assert_same_json;

        let u = db::User {
            id: "usr-1".into(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            created_at: 1_700_000_000_000,
        };
        let t = db::Team {
            id: "team-1".into(),
            name: "Ada's team".into(),
            created_at: 1_700_000_000_500,
        };
        // Before: `user_json`, `team_json`, `membership_json`, `member_json`, `api_key_json`.
        let old_user = json!({
            "id": u.id, "email": u.email, "name": u.name, "created_at": rfc3339(u.created_at),
        });
        let old_team = |role: Role| {
            json!({
                "id": t.id, "name": t.name, "created_at": rfc3339(t.created_at),
                "role": role.as_str(),
            })
        };
        assert_same_json(&User::from(&u), old_user.clone());
        assert_same_json(
            &super::teams::team_of(&t, Role::Owner),
            old_team(Role::Owner),
        );
        let m = db::Membership {
            team: t.clone(),
            role: Role::Admin,
            joined_at: 1_700_000_001_000,
        };
        let mut old_membership = old_team(Role::Admin);
        old_membership["joined_at"] = json!(rfc3339(m.joined_at));
        assert_same_json(&super::teams::membership_of(&m), old_membership);
        let member = db::Member {
            user: u.clone(),
            role: Role::Member,
            joined_at: 1_700_000_002_000,
        };
        assert_same_json(
            &super::teams::member_of(&member),
            json!({
                "user_id": u.id, "email": u.email, "name": u.name, "role": "member",
                "joined_at": rfc3339(member.joined_at),
            }),
        );
        for (created_by, last_used_at) in [(None, None), (Some("usr-1"), Some(1_700_000_003_000))] {
            let k = ApiKeyRow {
                id: "key-1".into(),
                team_id: t.id.clone(),
                name: "ci".into(),
                prefix: "wrn_1a2b".into(),
                created_by: created_by.map(str::to_string),
                owner_id: created_by.map(str::to_string),
                created_at: 1_700_000_000_000,
                last_used_at,
            };
            let old_key = json!({
                "id": k.id, "name": k.name, "prefix": k.prefix, "created_by": k.created_by,
                "owner_id": k.owner_id, "created_at": rfc3339(k.created_at), "last_used_at": k.last_used_at.map(rfc3339),
            });
            assert_same_json(&ApiKey::from(&k), old_key.clone());
            let mut old_created = old_key;
            old_created["key"] = json!("wrn_secret");
            assert_same_json(
                &CreatedApiKey {
                    api_key: ApiKey::from(&k),
                    key: "wrn_secret".into(),
                },
                old_created,
            );
        }
        let token = Token {
            token: "a.b.c".into(),
            token_type: "Bearer".into(),
            expires_at: rfc3339(1_700_086_400_000),
        };
        // Before: `token_fields` plus `user` (and `team` at sign-up).
        let old_login = json!({
            "token": "a.b.c", "token_type": "Bearer", "expires_at": rfc3339(1_700_086_400_000),
            "user": old_user,
        });
        assert_same_json(
            &LoginResponse {
                token: token.clone(),
                user: User::from(&u),
            },
            old_login.clone(),
        );
        let _ = old_login;
    }
}
