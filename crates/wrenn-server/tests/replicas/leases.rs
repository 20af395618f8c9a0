//! The lease itself, on PostgreSQL and on SQLite.

use std::time::Duration;

use wrenn_server::db::{Db, Lease};

use super::on_postgres;

async fn one_holder_then_take_over(db: Db) {
    let ttl = Duration::from_millis(400);
    let a = Lease::for_holder(&db, "work", "a", ttl);
    let b = Lease::for_holder(&db, "work", "b", ttl);
    assert!(a.try_acquire().await.unwrap(), "a free lease is taken");
    assert!(!b.try_acquire().await.unwrap(), "a held lease is not");
    assert!(
        a.try_acquire().await.unwrap(),
        "the holder takes it again (renews)"
    );
    assert!(a.renew().await.unwrap());
    assert_eq!(
        Lease::holder_of(&db, "work").await.unwrap().as_deref(),
        Some("a")
    );
    // Renewing keeps it past the first lifetime.
    for _ in 0..3 {
        tokio::time::sleep(ttl / 2).await;
        assert!(a.renew().await.unwrap());
        assert!(!b.try_acquire().await.unwrap());
    }
    // a stops renewing: once expired, b takes it, and a has lost it.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(Lease::holder_of(&db, "work").await.unwrap(), None);
    assert!(b.try_acquire().await.unwrap());
    assert!(!a.renew().await.unwrap());
    assert!(!a.try_acquire().await.unwrap());
    // Releasing lets another take it at once; a release by a non-holder changes nothing.
    a.release().await.unwrap();
    assert_eq!(
        Lease::holder_of(&db, "work").await.unwrap().as_deref(),
        Some("b")
    );
    b.release().await.unwrap();
    assert!(a.try_acquire().await.unwrap());
    // Other names are other leases.
    assert!(Lease::for_holder(&db, "other", "b", ttl)
        .try_acquire()
        .await
        .unwrap());
}

#[tokio::test]
async fn a_lease_on_postgres() {
    on_postgres(|url| async move {
        let db = Db::open(&url).await.unwrap();
        one_holder_then_take_over(db.clone()).await;
        // Twenty contenders at once (each its own connection): exactly one wins.
        let wins = futures_util::future::join_all((0..20).map(|i| {
            let db = db.clone();
            async move {
                Lease::for_holder(&db, "race", &format!("h{i}"), Duration::from_secs(60))
                    .try_acquire()
                    .await
                    .unwrap()
            }
        }))
        .await;
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    })
    .await
}

#[tokio::test]
async fn a_lease_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("wrenn.db").display()
    ))
    .await
    .unwrap();
    one_holder_then_take_over(db).await;
}
