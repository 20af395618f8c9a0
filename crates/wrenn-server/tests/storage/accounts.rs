//! Users, teams, memberships, API keys, the audit log and secrets, on both databases.

use super::*;
use wrenn_server::db::{hash_key, Caller, Role};

pub(crate) async fn users_teams_memberships_and_roles(s: Store) {
    let db = &s.db;
    let (ada, ada_team) = signup(db, "ada@example.com").await;
    assert!(ada.id.starts_with("usr-"));
    assert!(ada_team.id.starts_with("team-"));
    // Emails are unique.
    let dup = db
        .create_user_with_team("ada@example.com", "x", "h", "t")
        .await
        .unwrap_err();
    assert_eq!(code(dup), "conflict");
    // The failed sign-up left nothing behind (all or nothing).
    assert_eq!(db.team_count().await.unwrap(), 1);

    let (found, hash) = db.user_by_email("ada@example.com").await.unwrap().unwrap();
    assert_eq!(found, ada);
    assert_eq!(hash, "$argon2id$not-a-real-hash");
    assert!(db
        .user_by_email("nobody@example.com")
        .await
        .unwrap()
        .is_none());
    assert_eq!(db.user(&ada.id).await.unwrap(), Some(ada.clone()));

    let mine = db.memberships(&ada.id).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].team, ada_team);
    assert_eq!(mine[0].role, Role::Owner);

    // Ada adds Bob to her team.
    let (bob, bob_team) = signup(db, "bob@example.com").await;
    let as_ada = Caller::user(&ada_team.id, &ada);
    db.add_member(&as_ada, &bob.id, Role::Member).await.unwrap();
    let again = db.add_member(&as_ada, &bob.id, Role::Admin).await;
    assert_eq!(code(again.unwrap_err()), "conflict");
    assert_eq!(
        db.role(&ada_team.id, &bob.id).await.unwrap(),
        Some(Role::Member)
    );
    // Bob's teams: his own first, then Ada's.
    let bobs: Vec<(String, Role)> = db
        .memberships(&bob.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.team.id, m.role))
        .collect();
    assert_eq!(
        bobs,
        [
            (bob_team.id.clone(), Role::Owner),
            (ada_team.id.clone(), Role::Member)
        ]
    );
    let members: Vec<(String, Role)> = db
        .members(&ada_team.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.user.email, m.role))
        .collect();
    assert_eq!(
        members,
        [
            ("ada@example.com".to_string(), Role::Owner),
            ("bob@example.com".to_string(), Role::Member)
        ]
    );
    // Not a member of Bob's team: no role, no member row.
    assert_eq!(db.role(&bob_team.id, &ada.id).await.unwrap(), None);
    assert!(db.member(&bob_team.id, &ada.id).await.unwrap().is_none());

    // Roles change from what the caller saw; a stale view is a conflict.
    db.set_member_role(&as_ada, &bob.id, Role::Member, Role::Admin)
        .await
        .unwrap();
    let stale = db
        .set_member_role(&as_ada, &bob.id, Role::Member, Role::Owner)
        .await;
    assert_eq!(code(stale.unwrap_err()), "conflict");
    // The last owner cannot step down...
    let last = db
        .set_member_role(&as_ada, &ada.id, Role::Owner, Role::Admin)
        .await;
    assert_eq!(code(last.unwrap_err()), "conflict");
    // ...but can once there is another owner.
    db.set_member_role(&as_ada, &bob.id, Role::Admin, Role::Owner)
        .await
        .unwrap();
    db.set_member_role(&as_ada, &ada.id, Role::Owner, Role::Admin)
        .await
        .unwrap();
    // Owners are never removed.
    let as_bob = Caller::user(&ada_team.id, &bob);
    let gone = db.remove_member(&as_bob, &bob.id, Role::Owner).await;
    assert_eq!(code(gone.unwrap_err()), "conflict");
    db.remove_member(&as_bob, &ada.id, Role::Admin)
        .await
        .unwrap();
    assert_eq!(db.role(&ada_team.id, &ada.id).await.unwrap(), None);
    let twice = db.remove_member(&as_bob, &ada.id, Role::Admin).await;
    assert_eq!(code(twice.unwrap_err()), "not_found");
    // Changing someone who is not a member.
    let nobody = db
        .set_member_role(&as_bob, &ada.id, Role::Member, Role::Admin)
        .await;
    assert_eq!(code(nobody.unwrap_err()), "not_found");

    // Ada, no longer in her first team, makes another.
    let made = db.create_owned_team(&ada, "research").await.unwrap();
    assert_eq!(made.role, Role::Owner);
    let teams: Vec<String> = db
        .memberships(&ada.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.team.name)
        .collect();
    assert_eq!(teams, ["research"]);

    // Every change is in the right team's log.
    let log: Vec<String> = db
        .audit_log(&ada_team.id, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        log,
        [
            "team.member.remove",
            "team.member.role",
            "team.member.role",
            "team.member.role",
            "team.member.add",
            "user.signup"
        ]
    );
    let research = db.audit_log(&made.team.id, 100).await.unwrap();
    assert_eq!(research.len(), 1);
    assert_eq!(research[0].action, "team.create");
    assert_eq!(research[0].actor_id, ada.id);
}

pub(crate) async fn api_keys_store_only_the_hash(s: Store) {
    let db = &s.db;
    let (ada, team_a) = signup(db, "ada@example.com").await;
    let (bob, team_b) = signup(db, "bob@example.com").await;
    let as_ada = Caller::user(&team_a.id, &ada);
    let as_bob = Caller::user(&team_b.id, &bob);

    let (row, plaintext) = db.create_api_key_as(&as_ada, "ci").await.unwrap();
    assert!(
        plaintext.starts_with("wrn_") && plaintext.len() == 36,
        "{plaintext}"
    );
    assert!(plaintext[4..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(row.prefix, &plaintext[..8]);
    assert_eq!(row.created_by.as_deref(), Some(ada.id.as_str()));
    let (_, bob_key) = db.create_api_key_as(&as_bob, "bob").await.unwrap();
    let (boot, boot_key) = db.create_api_key(&team_a.id, "bootstrap").await.unwrap();
    assert_eq!(boot.created_by, None);

    // The table holds the SHA-256 and the 8-character prefix, never the key.
    let rows = sqlx::query("SELECT id, team_id, created_by, name, prefix, key_hash FROM api_keys")
        .fetch_all(&s.raw)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let hash: String = r.get("key_hash");
        assert_eq!(hash.len(), 64);
        for col in ["id", "team_id", "name", "prefix", "key_hash"] {
            let v: String = r.get(col);
            for key in [&plaintext, &bob_key, &boot_key] {
                assert!(!v.contains(&key[4..]), "{col} holds a key");
            }
        }
    }
    let stored: String = sqlx::query("SELECT key_hash FROM api_keys WHERE id = $1")
        .bind(&row.id)
        .fetch_one(&s.raw)
        .await
        .unwrap()
        .get("key_hash");
    assert_eq!(stored, hash_key(&plaintext));

    // Authenticate: the key's team, and its use is recorded.
    let caller = db.authenticate_key(&plaintext).await.unwrap().unwrap();
    assert_eq!(caller.team_id, team_a.id);
    assert_eq!(caller.actor_type, wrenn_types::Actor::ApiKey);
    assert_eq!(caller.actor_id, row.id);
    assert!(db.authenticate_key("wrn_0000").await.unwrap().is_none());
    assert!(db.authenticate_key(&row.prefix).await.unwrap().is_none());
    let listed = db.api_keys(&team_a.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k.team_id == team_a.id));
    assert!(listed
        .iter()
        .find(|k| k.id == row.id)
        .unwrap()
        .last_used_at
        .is_some());

    // Another team cannot delete it; it keeps working.
    let theirs = db.delete_api_key(&as_bob, &row.id).await;
    assert_eq!(code(theirs.unwrap_err()), "not_found");
    assert!(db.authenticate_key(&plaintext).await.unwrap().is_some());
    // Its own team can; then it stops working.
    db.delete_api_key(&as_ada, &row.id).await.unwrap();
    assert!(db.authenticate_key(&plaintext).await.unwrap().is_none());
    let again = db.delete_api_key(&as_ada, &row.id).await;
    assert_eq!(code(again.unwrap_err()), "not_found");
    assert!(db.authenticate_key(&bob_key).await.unwrap().is_some());

    let log: Vec<String> = db
        .audit_log(&team_a.id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(log, ["api_key.delete", "api_key.create", "user.signup"]);
}

pub(crate) async fn audit_log_keeps_order_per_team(s: Store) {
    let db = &s.db;
    let a = db.create_team("a").await.unwrap();
    let b = db.create_team("b").await.unwrap();
    let actor = |team: &str| Caller {
        team_id: team.into(),
        actor_type: wrenn_types::Actor::System,
        actor_id: "test".into(),
        actor_name: "test".into(),
    };
    // Many in the same millisecond, interleaved between teams.
    for i in 0..30 {
        let team = if i % 3 == 0 { &b.id } else { &a.id };
        db.audit(
            &actor(team),
            &format!("step.{i}"),
            ("x", "y"),
            "success",
            "",
        )
        .await
        .unwrap();
    }
    let want_a: Vec<String> = (0..30)
        .rev()
        .filter(|i| i % 3 != 0)
        .map(|i| format!("step.{i}"))
        .collect();
    let got_a: Vec<String> = db
        .audit_log(&a.id, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(got_a, want_a);
    let got_b = db.audit_log(&b.id, 3).await.unwrap();
    assert_eq!(
        got_b.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["step.27", "step.24", "step.21"]
    );
    // Timestamps never go backwards along the log.
    let all = db.audit_log(&a.id, 100).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));

    // Concurrent writers to one team (several connections on PostgreSQL): none lost, none
    // sharing a place.
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let db = db.clone();
            let caller = actor(&a.id);
            tokio::spawn(async move {
                db.audit(&caller, &format!("burst.{i}"), ("x", "y"), "success", "")
                    .await
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap().unwrap();
    }
    let after = db.audit_log(&a.id, 1000).await.unwrap();
    assert_eq!(after.len(), 20 + 16);
    let seqs = sqlx::query("SELECT seq FROM audit_log WHERE team_id = $1 ORDER BY seq")
        .bind(&a.id)
        .fetch_all(&s.raw)
        .await
        .unwrap();
    let seqs: Vec<i64> = seqs.iter().map(|r| r.get("seq")).collect();
    assert_eq!(seqs, (1..=36).collect::<Vec<i64>>());
}

pub(crate) async fn secrets_persist(s: Store) {
    let jwt = s.db.secret("jwt").await.unwrap();
    assert_eq!(jwt.len(), 64, "made on open, 256 bits");
    let x = s.db.secret("x").await.unwrap();
    assert_ne!(x, jwt);
    assert_eq!(s.db.secret("x").await.unwrap(), x);
    // Another process (or a restart) reads the same values...
    let other = Db::open(&s.url).await.unwrap();
    assert_eq!(other.secret("jwt").await.unwrap(), jwt);
    assert_eq!(other.secret("x").await.unwrap(), x);
    // ...and two processes making one at once agree on it.
    let (p, q) = tokio::join!(s.db.secret("y"), other.secret("y"));
    assert_eq!(p.unwrap(), q.unwrap());
    let stored: i64 = sqlx::query("SELECT COUNT(*) AS n FROM settings")
        .fetch_one(&s.raw)
        .await
        .unwrap()
        .get("n");
    assert_eq!(stored, 3);
}

pub(crate) async fn audit_pages_filter_and_admin_lists(s: Store) {
    use wrenn_server::db::AuditFilter;
    let db = &s.db;
    let (_, team) = signup(db, "ada@example.com").await;
    let caller = Caller {
        team_id: team.id.clone(),
        actor_type: wrenn_types::Actor::System,
        actor_id: "test".into(),
        actor_name: "test".into(),
    };
    for (action, resource) in [
        ("capsule.create", ("capsule", "cl-1")),
        ("capsule.pause", ("capsule", "cl-1")),
        ("capsule_x.odd", ("capsule", "cl-2")),
        ("api_key.create", ("api_key", "key-1")),
        ("capsule.destroy", ("capsule", "cl-2")),
    ] {
        db.audit(&caller, action, resource, "success", "")
            .await
            .unwrap();
    }
    let actions = |rows: Vec<wrenn_server::db::AuditRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.action).collect()
    };
    let f = |action: Option<&str>, rt: Option<&str>, rid: Option<&str>, before: Option<i64>| {
        AuditFilter {
            before,
            action: action.map(Into::into),
            resource_type: rt.map(Into::into),
            resource_id: rid.map(Into::into),
        }
    };
    // A prefix ends at a dot: `capsule` takes `capsule.*`, never `capsule_x.*` (`_` is no
    // wildcard).
    let by_prefix = db
        .audit_page(&team.id, &f(Some("capsule"), None, None, None), 100)
        .await
        .unwrap();
    assert_eq!(
        actions(by_prefix),
        ["capsule.destroy", "capsule.pause", "capsule.create"]
    );
    let exact = db
        .audit_page(&team.id, &f(Some("capsule_x.odd"), None, None, None), 100)
        .await
        .unwrap();
    assert_eq!(actions(exact), ["capsule_x.odd"]);
    let one = db
        .audit_page(&team.id, &f(None, Some("capsule"), Some("cl-2"), None), 100)
        .await
        .unwrap();
    assert_eq!(actions(one), ["capsule.destroy", "capsule_x.odd"]);
    // Paging by seq: the first page, then what is older than its last entry.
    let first = db
        .audit_page(&team.id, &AuditFilter::default(), 2)
        .await
        .unwrap();
    let before = first.last().unwrap().seq;
    let next = db
        .audit_page(&team.id, &f(None, None, None, Some(before)), 2)
        .await
        .unwrap();
    assert_eq!(actions(next), ["capsule_x.odd", "capsule.pause"]);

    // The admin lists see every team.
    let (_, other) = signup(db, "bob@example.com").await;
    let users = db.admin_users().await.unwrap();
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|u| u.teams == 1));
    let teams = db.admin_teams().await.unwrap();
    assert!(teams.iter().any(|t| t.id == other.id && t.members == 1));
    assert!(db.admin_templates().await.unwrap().is_empty());
}
