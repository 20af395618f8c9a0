//! Capsules and templates, scoped by team; capsule status checked by the database (migration
//! 0009), on both databases.

use super::*;

pub(crate) async fn migrations_apply(s: Store) {
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

pub(crate) fn capsule(team: &str, id: &str) -> CapsuleRow {
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
        host_id: None,
    }
}

pub(crate) fn template(team: &str, name: &str, agent_name: &str) -> TemplateRow {
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
        host_id: None,
        platform: 0,
        kind: "snapshot".into(),
    }
}

pub(crate) async fn capsules_and_templates_are_scoped_by_team(s: Store) {
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
pub(crate) async fn capsules_are_counted_by_status(s: Store) {
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

pub(crate) async fn capsule_network_round_trips(s: Store) {
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

/// Inserts a capsule row of `status` through the plain pool (as any writer of the table would).
pub(crate) async fn insert_raw_capsule(
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
pub(crate) async fn capsule_status_is_checked(s: Store) {
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
pub(crate) async fn status_check_migration_keeps_rows(url: String) {
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
