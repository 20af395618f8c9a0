//! Notifications between control-plane replicas on one PostgreSQL (`NOTIFY`/`LISTEN`), for
//! what one replica does and every replica must know at once (events for the SSE streams).
//! SQLite has one control plane: nothing to notify, nobody to listen.
//!
//! A payload too large for `NOTIFY` (8000 bytes) is stored in `notifications` and the
//! notification carries `@` and its id; listeners read it back. Sending goes through a queue
//! per channel, in order, on a connection of its own ([`Db::outbox`], [`Db::enqueue`]).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::{now_ms, Db};
use crate::error::{ApiError, Result};

/// Longest payload sent inline (PostgreSQL refuses 8000 bytes and more).
pub const MAX_INLINE: usize = 7900;
/// Most payloads waiting to be sent, per channel.
const QUEUE: usize = 4096;
/// How long a stored large payload is kept for listeners that read it late.
const KEEP_LARGE_MS: i64 = 10 * 60 * 1000;

/// The PostgreSQL side of a [`Db`]: its URL (for listeners), a small pool for `NOTIFY`, and
/// the queues that feed it.
pub(crate) struct Cluster {
    url: String,
    notify: PgPool,
    queues: Mutex<Vec<(String, mpsc::Sender<String>)>>,
}

impl Cluster {
    pub(crate) fn new(url: &str) -> Result<Arc<Cluster>> {
        let notify = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(url)?;
        Ok(Arc::new(Cluster {
            url: url.to_string(),
            notify,
            queues: Mutex::default(),
        }))
    }
}

impl Db {
    /// Whether other control planes may share this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.cluster.is_some()
    }

    /// Sends `payload` to every replica listening on `channel` (this one too), now.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let sent = if payload.len() <= MAX_INLINE && !payload.starts_with('@') {
            payload.to_string()
        } else {
            let id = wrenn_types::secret::hex(16)?;
            let now = now_ms();
            sqlx::query("DELETE FROM notifications WHERE created_at < $1")
                .bind(now - KEEP_LARGE_MS)
                .execute(&cluster.notify)
                .await?;
            sqlx::query(
                "INSERT INTO notifications (id, channel, payload, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind(channel)
            .bind(payload)
            .bind(now)
            .execute(&cluster.notify)
            .await?;
            format!("@{id}")
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(&sent)
            .execute(&cluster.notify)
            .await?;
        Ok(())
    }

    /// Makes `channel`'s send queue: from now on [`Db::enqueue`] on it succeeds and the
    /// caller drains the receiver (in order, with [`Db::notify`]). None on SQLite.
    pub fn outbox(&self, channel: &str) -> Option<mpsc::Receiver<String>> {
        let cluster = self.cluster.as_ref()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut queues = cluster.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.retain(|(c, _)| c != channel);
        queues.push((channel.to_string(), tx));
        Some(rx)
    }

    /// Queues `payload` for `channel`; false (and nothing queued) when nobody drains that
    /// channel's queue (SQLite, or before [`Db::outbox`], or after its receiver ended), or
    /// when the queue is full (the database is slow or down).
    pub fn enqueue(&self, channel: &str, payload: String) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let queues = cluster.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .iter()
            .find(|(c, _)| c == channel)
            .is_some_and(|(_, tx)| tx.try_send(payload).is_ok())
    }

    /// Listens on `channel` (None on SQLite). The listener reconnects by itself.
    pub async fn listen(&self, channel: &str) -> Result<Option<Listener>> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let mut inner = PgListener::connect(&cluster.url).await?;
        inner.listen(channel).await?;
        Ok(Some(Listener {
            inner,
            db: self.clone(),
        }))
    }

    async fn stored_payload(&self, id: &str) -> Result<Option<String>> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let row: Option<(String,)> =
            sqlx::query_as("SELECT payload FROM notifications WHERE id = $1")
                .bind(id)
                .fetch_optional(&cluster.notify)
                .await?;
        Ok(row.map(|r| r.0))
    }
}

/// What a [`Listener`] hears.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// A payload, as sent.
    Payload(String),
    /// The connection was lost and is being made again: notifications may have been missed.
    Gap,
}

/// A `LISTEN` on one channel, on a connection of its own.
pub struct Listener {
    inner: PgListener,
    db: Db,
}

impl Listener {
    /// The next notification, or a gap; waits for either. An error means the database
    /// is out of reach now: wait a little and call again (it reconnects).
    pub async fn recv(&mut self) -> Result<Heard> {
        let Some(n) = self.inner.try_recv().await? else {
            return Ok(Heard::Gap);
        };
        let payload = n.payload();
        match payload.strip_prefix('@') {
            Some(id) => match self.db.stored_payload(id).await? {
                Some(p) => Ok(Heard::Payload(p)),
                None => Err(ApiError::Internal(format!(
                    "notification {id}'s payload is gone"
                ))),
            },
            None => Ok(Heard::Payload(payload.to_string())),
        }
    }
}
