//! A PostgreSQL database of a test's own on the server `WRENN_TEST_DATABASE_URL` names (its
//! role needs CREATEDB; `scripts/install-postgres.sh` makes one and prints the URL, `make unit`
//! sets it): made for the check, dropped after it, also when the check fails.

use std::{future::Future, panic::AssertUnwindSafe};

use futures_util::FutureExt;
use sqlx::any::AnyPoolOptions;

/// `url` with its database name replaced.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let slash = base.rfind('/').expect("a database URL has a path");
    let mut out = format!("{}/{name}", &base[..slash]);
    if let Some(q) = query {
        out = format!("{out}?{q}");
    }
    out
}

/// Runs `check` with the URL of a new, empty database named `prefix_` + random hex (no
/// migrations applied), then drops it.
pub async fn on_new_database<F, Fut>(prefix: &str, check: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let admin_url = std::env::var("WRENN_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "WRENN_TEST_DATABASE_URL is not set: these tests need a PostgreSQL server whose \
                 role may CREATE DATABASE. Run \
                 `export WRENN_TEST_DATABASE_URL=$(scripts/install-postgres.sh)` (as root: it \
                 installs and starts a private cluster on 127.0.0.1:55432), or `make unit`."
            )
        });
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let name = format!("{prefix}_{hex}");
    sqlx::any::install_default_drivers();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    let outcome = AssertUnwindSafe(check(with_database(&admin_url, &name)))
        .catch_unwind()
        .await;
    let dropped = drop_database(&admin, &name).await;
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    dropped.unwrap_or_else(|e| panic!("dropping database {name} (tried for 10 s): {e}"));
}

/// Drops database `name` through `admin`. FORCE ends the test's own connections; a server
/// process of another role on it (an autovacuum worker, briefly) cannot be ended by ours, so a
/// refused drop is tried again for up to 10 s.
pub async fn drop_database(admin: &sqlx::AnyPool, name: &str) -> Result<(), sqlx::Error> {
    let mut dropped = Ok(());
    for _ in 0..40 {
        dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(admin)
            .await
            .map(|_| ());
        if dropped.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    dropped
}
