//! The embedded default backend: one SQLite file in WAL mode, one writer, many readers.

use crate::shared::{TxKind, impl_store};
use crate::{Health, Result, StoreError};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite allows one writer at a time; a single-connection write pool makes writers queue
/// in-process instead of failing with `SQLITE_BUSY`, while readers run in parallel.
#[derive(Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad sqlite url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { reader, writer })
    }

    async fn begin(
        &self,
        _kind: TxKind<'_>,
        write: bool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        let pool = if write { &self.writer } else { &self.reader };
        Ok(pool.begin().await?)
    }

    /// Nothing to set: SQLite has no row-level security; every query filters by tenant.
    async fn scope_tx(
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        _tenant: &str,
    ) -> Result<()> {
        Ok(())
    }

    /// The single writer connection already serialises changes to an agent.
    async fn lock_agent(
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        _tenant: &str,
        _agent: &str,
    ) -> Result<()> {
        Ok(())
    }

    /// The single writer connection already serialises appends.
    async fn lock_audit_chain(
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        _tenant: &str,
    ) -> Result<()> {
        Ok(())
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

impl_store!(SqliteStore, sqlx::Sqlite);
