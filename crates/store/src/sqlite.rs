//! The embedded default backend: one SQLite file in WAL mode, one writer, many readers.

use crate::backend::{Backend, INSERT_ROWS, Tx, TxKind, chain_after};
use crate::{AuditHead, AuditStore, Health, Result, StoreError};
use berth_audit::{Entry, NewEntry};
use berth_core::TenantScope;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// The SQL of every capability, compiled for SQLite (see `sql/mod.rs`).
#[path = "sql/mod.rs"]
#[allow(clippy::duplicate_mod)] // on purpose: the same SQL, compiled once per driver
mod sql;

/// The store the shared SQL in `sql/` implements the storage traits for.
type Store = SqliteStore;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite allows one writer at a time; a single-connection write pool makes writers queue
/// in-process instead of failing with `SQLITE_BUSY`, while readers run in parallel.
///
/// The writer never checkpoints the WAL itself: a checkpoint (the only point where WAL mode
/// with `synchronous = NORMAL` waits for the disk) would stall every commit queued behind
/// it. A background task checkpoints from its own connection instead (`PASSIVE`: it never
/// blocks the writer), so commits stay at memory speed.
#[derive(Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    /// The checkpoint task runs while any clone of the store is alive.
    _alive: std::sync::Arc<()>,
}

/// How often the background task moves the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad sqlite url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // A connection to a local file does not drop like a network one: no ping before
        // each use (it was a round trip through sqlx's worker thread on every statement).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        MIGRATOR.run(&writer).await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        let alive = std::sync::Arc::new(());
        tokio::spawn(checkpoint_loop(
            checkpointer,
            std::sync::Arc::downgrade(&alive),
        ));
        Ok(SqliteStore {
            reader,
            writer,
            _alive: alive,
        })
    }

    /// The write pool, for tests that tamper with rows directly.
    pub fn raw_pool(&self) -> &SqlitePool {
        &self.writer
    }
}

#[async_trait::async_trait]
impl Health for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

impl Backend for SqliteStore {
    type Db = sqlx::Sqlite;

    async fn begin(&self, _kind: TxKind<'_>, write: bool) -> Result<Tx<sqlx::Sqlite>> {
        let pool = if write { &self.writer } else { &self.reader };
        Ok(pool.begin().await?)
    }

    /// Nothing to set: SQLite has no row-level security; every query filters by tenant.
    async fn scope_tx(_tx: &mut Tx<sqlx::Sqlite>, _tenant: &str) -> Result<()> {
        Ok(())
    }

    /// The single writer connection already serialises changes to an agent.
    async fn lock_agent(_tx: &mut Tx<sqlx::Sqlite>, _tenant: &str, _agent: &str) -> Result<()> {
        Ok(())
    }

    /// The single writer connection already serialises appends.
    async fn lock_audit_chain(_tx: &mut Tx<sqlx::Sqlite>, _tenant: &str) -> Result<()> {
        Ok(())
    }

    /// Appends with one statement, in autocommit, where a transaction would take four
    /// (`BEGIN`, the head's `SELECT`, `INSERT`, `COMMIT`), each a hand-off to sqlx's worker
    /// thread. A stale `head` cannot fork the chain: its next `seq` is taken, and the primary
    /// key `(tenant_id, seq)` refuses the whole statement.
    async fn append_after_head(
        &self,
        scope: &TenantScope,
        head: &AuditHead,
        entries: &[NewEntry],
    ) -> Result<Option<Vec<Entry>>> {
        if entries.len() > INSERT_ROWS {
            return self.append_audit_batch(scope, entries).await.map(Some);
        }
        let stored = chain_after(scope.tenant_str(), head, entries);
        let mut conn = self.writer.acquire().await?;
        match sql::audit::insert_audit_rows(&mut conn, scope.tenant_str(), &stored).await {
            Ok(()) => Ok(Some(stored)),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until the store is dropped; a failed
/// checkpoint is retried at the next tick (the WAL only grows meanwhile).
async fn checkpoint_loop(pool: SqlitePool, alive: std::sync::Weak<()>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
    pool.close().await;
}
