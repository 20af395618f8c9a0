//! The storage layer on both databases: every check below runs against a fresh SQLite file
//! (`sqlite::…`) and a fresh PostgreSQL database (`postgres::…`), made for the one test and
//! dropped after it. The PostgreSQL server is `WRENN_TEST_DATABASE_URL` (its role needs
//! CREATEDB; `scripts/install-postgres.sh` makes one and prints the URL, `make unit` sets it).

use std::{collections::HashMap, future::Future, panic::AssertUnwindSafe};

use futures_util::FutureExt;
use sqlx::{any::AnyPoolOptions, AnyPool, Row};
use wrenn_server::{
    db::{hash_key, Caller, CapsuleRow, Db, Role, Team, TemplateRow, User},
    ApiError,
};

/// A database under test: the `Db`, a plain pool on the same database (to look at tables the
/// way an attacker with a copy of the database would), and its URL.
struct Store {
    db: Db,
    raw: AnyPool,
    url: String,
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let slash = base.rfind('/').expect("a database URL has a path");
    let mut out = format!("{}/{name}", &base[..slash]);
    if let Some(q) = query {
        out = format!("{out}?{q}");
    }
    out
}

async fn raw_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Runs `check` on a fresh database of `backend`, then removes the database (also when the
/// check fails).
async fn run<F, Fut>(backend: Backend, check: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    with_empty_database(backend, |url| async move {
        let db = Db::open(&url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
        let raw = raw_pool(&url).await;
        check(Store { db, raw, url }).await;
    })
    .await
}

/// Runs `check` with the URL of a new, empty database of `backend` (no migrations applied),
/// then removes the database (also when the check fails).
async fn with_empty_database<F, Fut>(backend: Backend, check: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("wrenn.db").display()
            );
            check(url).await;
        }
        Backend::Postgres => {
            let admin_url = std::env::var("WRENN_TEST_DATABASE_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| {
                    panic!(
                    "WRENN_TEST_DATABASE_URL is not set: the PostgreSQL half of the storage tests \
                     needs a server whose role may CREATE DATABASE. Run \
                     `export WRENN_TEST_DATABASE_URL=$(scripts/install-postgres.sh)` (as root: it \
                     installs and starts a private cluster on 127.0.0.1:55432), or `make unit`."
                )
                });
            let name = format!("wrenn_test_{}", random_hex());
            let admin = raw_pool(&admin_url).await;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
            let url = with_database(&admin_url, &name);
            let outcome = AssertUnwindSafe(check(url)).catch_unwind().await;
            let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await;
            if let Err(p) = outcome {
                std::panic::resume_unwind(p);
            }
            dropped.unwrap_or_else(|e| panic!("dropping database {name}: {e}"));
        }
    }
}

macro_rules! on_both_databases {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    super::run(super::Backend::Sqlite, super::$check).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    super::run(super::Backend::Postgres, super::$check).await
                }
            )*
        }
    };
}

on_both_databases!(
    migrations_apply,
    users_teams_memberships_and_roles,
    api_keys_store_only_the_hash,
    capsules_and_templates_are_scoped_by_team,
    capsules_are_counted_by_status,
    capsule_network_round_trips,
    audit_log_keeps_order_per_team,
    secrets_persist,
    capsule_status_is_checked,
);

#[tokio::test]
async fn sqlite_status_check_migration_keeps_rows() {
    with_empty_database(Backend::Sqlite, status_check_migration_keeps_rows).await
}

#[tokio::test]
async fn postgres_status_check_migration_keeps_rows() {
    with_empty_database(Backend::Postgres, status_check_migration_keeps_rows).await
}

fn code(e: ApiError) -> &'static str {
    e.status_and_code().1
}

/// A user who signed up, with their personal team.
async fn signup(db: &Db, email: &str) -> (User, Team) {
    db.create_user_with_team(email, "someone", "$argon2id$not-a-real-hash", "personal")
        .await
        .unwrap()
}

async fn migrations_apply(s: Store) {
    let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&s.raw)
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get("version")).collect();
    // Every migration in the crate's folder, applied in order.
    let mut expected: Vec<i64> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".sql")?.split('_').next()?.parse().ok()
            })
            .collect();
    expected.sort();
    assert!(expected.len() >= 4);
    assert_eq!(versions, expected);
    for table in [
        "teams",
        "users",
        "memberships",
        "api_keys",
        "capsules",
        "templates",
        "audit_log",
        "settings",
        "user_sessions",
        "invitations",
    ] {
        let r = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(&s.raw)
            .await
            .unwrap_or_else(|e| panic!("table {table}: {e}"));
        let _: i64 = r.get("n");
    }
    // Opening again (a restart) finds everything applied and changes nothing.
    let again = Db::open(&s.url).await.unwrap();
    assert_eq!(again.team_count().await.unwrap(), 0);
}

async fn users_teams_memberships_and_roles(s: Store) {
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

async fn api_keys_store_only_the_hash(s: Store) {
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

fn capsule(team: &str, id: &str) -> CapsuleRow {
    CapsuleRow {
        id: id.into(),
        team_id: team.into(),
        template: "minimal".into(),
        status: wrenn_types::CapsuleStatus::Running,
        vcpus: 1,
        memory_mb: 256,
        disk_size_mb: 1024,
        timeout_sec: 0,
        metadata: HashMap::from([("k".to_string(), "v".to_string())]),
        error: None,
        created_at: 1,
        started_at: Some(1),
        last_active_at: None,
        updated_at: 1,
    }
}

fn template(team: &str, name: &str, agent_name: &str) -> TemplateRow {
    TemplateRow {
        id: wrenn_types::Id::new(wrenn_types::IdKind::Template).to_string(),
        team_id: team.into(),
        name: name.into(),
        agent_name: agent_name.into(),
        vcpus: 1,
        memory_mb: 256,
        size_bytes: 10,
        source_capsule: "cl-x".into(),
        metadata: HashMap::new(),
        created_at: 1,
    }
}

async fn capsules_and_templates_are_scoped_by_team(s: Store) {
    let db = &s.db;
    let a = db.create_team("a").await.unwrap();
    let b = db.create_team("b").await.unwrap();
    let ca = capsule(&a.id, "cl-aaaaaaaaaaaaaaaaaaaaaaaaa");
    let cb = capsule(&b.id, "cl-bbbbbbbbbbbbbbbbbbbbbbbbb");
    db.insert_capsule(&ca).await.unwrap();
    db.insert_capsule(&cb).await.unwrap();

    assert_eq!(db.capsule(&a.id, &ca.id).await.unwrap(), ca);
    assert_eq!(
        code(db.capsule(&a.id, &cb.id).await.unwrap_err()),
        "not_found"
    );
    assert_eq!(
        code(db.capsule(&b.id, &ca.id).await.unwrap_err()),
        "not_found"
    );
    assert_eq!(db.capsules(&a.id).await.unwrap(), std::slice::from_ref(&ca));
    assert_eq!(db.capsules(&b.id).await.unwrap(), std::slice::from_ref(&cb));
    // Stopped capsules leave the list but stay readable by their team.
    db.set_capsule_status(&ca.id, wrenn_types::CapsuleStatus::Stopped, None, false)
        .await
        .unwrap();
    assert!(db.capsules(&a.id).await.unwrap().is_empty());
    assert_eq!(
        db.capsule(&a.id, &ca.id).await.unwrap().status,
        wrenn_types::CapsuleStatus::Stopped
    );

    // Both teams may name a template alike; each sees its own.
    db.insert_template(&template(&a.id, "snap", "ta.snap"))
        .await
        .unwrap();
    db.insert_template(&template(&b.id, "snap", "tb.snap"))
        .await
        .unwrap();
    db.insert_template(&template(&b.id, "only-b", "tb.only-b"))
        .await
        .unwrap();
    let mine = db.template(&a.id, "snap").await.unwrap().unwrap();
    assert_eq!(mine.agent_name, "ta.snap");
    assert!(db.template(&a.id, "only-b").await.unwrap().is_none());
    let names: Vec<String> = db
        .templates(&a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.agent_name)
        .collect();
    assert_eq!(names, ["ta.snap"]);
    // Deleting through team A never touches team B's rows.
    db.delete_template(&a.id, "only-b").await.unwrap();
    assert!(db.template(&b.id, "only-b").await.unwrap().is_some());
    db.delete_template(&a.id, "snap").await.unwrap();
    assert!(db.template(&a.id, "snap").await.unwrap().is_none());
    assert_eq!(
        db.template(&b.id, "snap")
            .await
            .unwrap()
            .unwrap()
            .agent_name,
        "tb.snap"
    );
    assert_eq!(db.templates(&b.id).await.unwrap().len(), 2);
}

/// `/metrics` counts capsules of every team by status.
async fn capsules_are_counted_by_status(s: Store) {
    let db = &s.db;
    assert!(db.capsule_status_counts().await.unwrap().is_empty());
    let a = db.create_team("a").await.unwrap();
    let b = db.create_team("b").await.unwrap();
    for (team, id, status) in [
        (&a.id, "cl-aaaaaaaaaaaaaaaaaaaaaaaa1", "running"),
        (&a.id, "cl-aaaaaaaaaaaaaaaaaaaaaaaa2", "paused"),
        (&b.id, "cl-bbbbbbbbbbbbbbbbbbbbbbbb1", "running"),
        (&b.id, "cl-bbbbbbbbbbbbbbbbbbbbbbbb2", "stopped"),
    ] {
        db.insert_capsule(&CapsuleRow {
            status: status.parse().unwrap(),
            ..capsule(team, id)
        })
        .await
        .unwrap();
    }
    assert_eq!(
        db.capsule_status_counts().await.unwrap(),
        [
            ("paused".to_string(), 1),
            ("running".to_string(), 2),
            ("stopped".to_string(), 1)
        ]
    );
}

async fn capsule_network_round_trips(s: Store) {
    let db = &s.db;
    let a = db.create_team("a").await.unwrap();
    let id = "cl-aaaaaaaaaaaaaaaaaaaaaaaa1";
    db.insert_capsule(&capsule(&a.id, id)).await.unwrap();
    // A capsule made before per-capsule lists: egress on, no lists.
    let (on, p) = db.capsule_network(id).await.unwrap();
    assert!(on);
    assert_eq!(p, wrenn_types::egress::EgressPolicy::default());
    let p = wrenn_types::egress::EgressPolicy::new(
        &["example.com".into(), "203.0.113.0/24".into()],
        &["bad.example.com".into()],
    )
    .unwrap();
    db.set_capsule_network(id, false, &p).await.unwrap();
    assert_eq!(db.capsule_network(id).await.unwrap(), (false, p));
    assert_eq!(
        code(
            db.capsule_network("cl-nonenonenonenonenonenone1")
                .await
                .unwrap_err()
        ),
        "not_found"
    );
}

async fn audit_log_keeps_order_per_team(s: Store) {
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

async fn secrets_persist(s: Store) {
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

/// Inserts a capsule row of `status` through the plain pool (as any writer of the table would).
async fn insert_raw_capsule(
    raw: &AnyPool,
    team: &str,
    id: &str,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO capsules (id, team_id, template, status, vcpus, memory_mb, disk_size_mb, \
         timeout_sec, metadata, error, created_at, started_at, last_active_at, updated_at) \
         VALUES ($1, $2, 'minimal', $3, 1, 256, 1024, 0, '{}', NULL, 1, NULL, NULL, 1)",
    )
    .bind(id)
    .bind(team)
    .bind(status)
    .execute(raw)
    .await
    .map(|_| ())
}

/// The database refuses a capsule status that is not one of `CapsuleStatus`'s texts, on insert
/// and on update; each of those texts is accepted.
async fn capsule_status_is_checked(s: Store) {
    let team = s.db.create_team("a").await.unwrap();
    for (n, status) in wrenn_types::CapsuleStatus::ALL.iter().enumerate() {
        let id = format!("cl-{n:0>25}");
        insert_raw_capsule(&s.raw, &team.id, &id, status.as_str())
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
    }
    for (n, bad) in ["teleporting", "Running", "RUNNING", "", "running "]
        .iter()
        .enumerate()
    {
        let id = format!("cl-bad{n:0>22}");
        let e = insert_raw_capsule(&s.raw, &team.id, &id, bad)
            .await
            .expect_err(bad);
        assert!(
            e.to_string().to_lowercase().contains("check"),
            "{bad:?}: {e}"
        );
    }
    let id = format!("cl-{:0>25}", 2);
    let e = sqlx::query("UPDATE capsules SET status = 'hibernated' WHERE id = $1")
        .bind(&id)
        .execute(&s.raw)
        .await
        .expect_err("an update to a bad status");
    assert!(e.to_string().to_lowercase().contains("check"), "{e}");
    // Nothing bad got in.
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM capsules")
        .fetch_one(&s.raw)
        .await
        .unwrap()
        .get("n");
    assert_eq!(n, wrenn_types::CapsuleStatus::ALL.len() as i64);
}

/// Migration 0009 rebuilds `capsules` (for its CHECK): a database at 0008 with a capsule keeps
/// the row with every column, and the index by team.
async fn status_check_migration_keeps_rows(url: String) {
    let raw = raw_pool(&url).await;
    let all = sqlx::migrate!("./migrations");
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = all
        .migrations
        .iter()
        .filter(|m| m.version < 9)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert!(before.migrations.len() < all.migrations.len());
    before.run(&raw).await.expect("migrating to 0008");
    sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ('tm-a', 'a', 1)")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO capsules (id, team_id, template, status, vcpus, memory_mb, disk_size_mb, \
         timeout_sec, metadata, error, created_at, started_at, last_active_at, updated_at, \
         public, access_token_hash, egress, egress_allow, egress_deny) \
         VALUES ('cl-keep', 'tm-a', 'python', 'paused', 2, 512, 2048, 30, '{\"k\":\"v\"}', \
         'why', 5, 6, 7, 8, 1, 'hash', 0, '[\"example.com\"]', '[\"10.0.0.0/8\"]')",
    )
    .execute(&raw)
    .await
    .unwrap();

    let db = Db::open(&url).await.expect("migrating to the latest");
    let row = sqlx::query(
        "SELECT id, team_id, template, status, vcpus, memory_mb, disk_size_mb, timeout_sec, \
         metadata, error, created_at, started_at, last_active_at, updated_at, public, \
         access_token_hash, egress, egress_allow, egress_deny FROM capsules",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    assert_eq!(row.len(), 1);
    let r = &row[0];
    let text = |c: &str| r.get::<String, _>(c);
    let int = |c: &str| r.get::<i64, _>(c);
    assert_eq!(
        [
            text("id"),
            text("team_id"),
            text("template"),
            text("status"),
            text("metadata"),
            text("error"),
            text("access_token_hash"),
            text("egress_allow"),
            text("egress_deny"),
        ],
        [
            "cl-keep",
            "tm-a",
            "python",
            "paused",
            "{\"k\":\"v\"}",
            "why",
            "hash",
            "[\"example.com\"]",
            "[\"10.0.0.0/8\"]"
        ]
    );
    assert_eq!(
        [
            int("vcpus"),
            int("memory_mb"),
            int("disk_size_mb"),
            int("timeout_sec"),
            int("created_at"),
            int("started_at"),
            int("last_active_at"),
            int("updated_at"),
            int("public"),
            int("egress"),
        ],
        [2, 512, 2048, 30, 5, 6, 7, 8, 1, 0]
    );
    // Through the storage layer too, with the team's scoping.
    let c = db.capsule("tm-a", "cl-keep").await.unwrap();
    assert_eq!((c.template.as_str(), c.vcpus), ("python", 2));
    assert_eq!(c.status.to_string(), "paused");
    // Defaults of the later columns still apply to new rows.
    insert_raw_capsule(&raw, "tm-a", "cl-new", "running")
        .await
        .unwrap();
    let r = sqlx::query("SELECT public, egress, egress_allow FROM capsules WHERE id = 'cl-new'")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(
        (r.get::<i64, _>("public"), r.get::<i64, _>("egress")),
        (0, 1)
    );
    assert_eq!(r.get::<String, _>("egress_allow"), "[]");
    // The index by team is back.
    let index = if url.starts_with("sqlite:") {
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' AND name = 'capsules_by_team'"
    } else {
        "SELECT COUNT(*) AS n FROM pg_indexes WHERE indexname = 'capsules_by_team'"
    };
    let n: i64 = sqlx::query(index).fetch_one(&raw).await.unwrap().get("n");
    assert_eq!(n, 1);
    // The foreign key to teams is kept (SQLite checks it where the server turns it on).
    let mut conn = raw.acquire().await.unwrap();
    if url.starts_with("sqlite:") {
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let e = sqlx::query(
        "INSERT INTO capsules (id, team_id, template, status, vcpus, memory_mb, disk_size_mb, \
         timeout_sec, metadata, created_at, updated_at) \
         VALUES ('cl-orphan', 'tm-nobody', 'minimal', 'running', 1, 256, 1024, 0, '{}', 1, 1)",
    )
    .execute(&mut *conn)
    .await;
    assert!(e.is_err(), "a capsule of no team");
}
