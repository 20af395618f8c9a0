//! The storage layer on both databases: every check below runs against a fresh SQLite file
//! (`sqlite::…`) and a fresh PostgreSQL database (`postgres::…`), made for the one test and
//! dropped after it. The PostgreSQL server is `WRENN_TEST_DATABASE_URL` (its role needs
//! CREATEDB; `scripts/install-postgres.sh` makes one and prints the URL, `make unit` sets it).

use std::{collections::HashMap, future::Future};

use sqlx::{any::AnyPoolOptions, AnyPool, Row};
use wrenn_server::{
    db::{CapsuleRow, Db, Team, TemplateRow, User},
    ApiError,
};

mod accounts;
mod capsules;
#[path = "../pg/mod.rs"]
mod pg;

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
        Backend::Postgres => pg::on_new_database("wrenn_test", check).await,
    }
}

macro_rules! on_both_databases {
    ($($module:ident :: $check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    super::run(super::Backend::Sqlite, super::$module::$check).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    super::run(super::Backend::Postgres, super::$module::$check).await
                }
            )*
        }
    };
}

on_both_databases!(
    capsules::migrations_apply,
    accounts::users_teams_memberships_and_roles,
    accounts::api_keys_store_only_the_hash,
    capsules::capsules_and_templates_are_scoped_by_team,
    capsules::capsules_are_counted_by_status,
    capsules::capsule_network_round_trips,
    accounts::audit_log_keeps_order_per_team,
    accounts::audit_pages_filter_and_admin_lists,
    accounts::secrets_persist,
    capsules::capsule_status_is_checked,
);

#[tokio::test]
async fn sqlite_status_check_migration_keeps_rows() {
    with_empty_database(Backend::Sqlite, capsules::status_check_migration_keeps_rows).await
}

#[tokio::test]
async fn postgres_status_check_migration_keeps_rows() {
    with_empty_database(
        Backend::Postgres,
        capsules::status_check_migration_keeps_rows,
    )
    .await
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
