//! The scale-out backend: PostgreSQL with row-level security as a second wall.
//!
//! The connecting role migrates the schema, then every pooled connection switches to the
//! restricted role `berth_app` (not owner, not superuser, no BYPASSRLS). Each transaction
//! names its tenant with `set_config('berth.tenant_id', …, true)`, so a query that forgets
//! its `tenant_id` filter still sees only that tenant's rows.

use crate::backend::{Backend, Tx, TxKind};
use crate::{AuditHead, AuditStore, Health, Result, StoreError};
use berth_audit::{Entry, NewEntry};
use berth_core::TenantScope;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// The SQL of every capability, compiled for PostgreSQL (see `sql/mod.rs`).
#[path = "sql/mod.rs"]
#[allow(clippy::duplicate_mod)] // on purpose: the same SQL, compiled once per driver
mod sql;

/// The store the shared SQL in `sql/` implements the storage traits for.
type Store = PgStore;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The role all tenant work runs as.
pub const APP_ROLE: &str = "berth_app";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad postgres url: {e}")))?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&admin).await?;
        Self::prepare_app_role(&admin).await?;
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(format!("SET ROLE {APP_ROLE}").as_str())
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(PgStore { pool })
    }

    /// Creates `berth_app` if missing (tolerating a concurrent creator) and grants it
    /// exactly the table privileges it needs, and membership to the connecting role.
    async fn prepare_app_role(admin: &PgPool) -> Result<()> {
        admin
            .execute(
                "DO $$ BEGIN \
                   CREATE ROLE berth_app NOLOGIN NOSUPERUSER NOBYPASSRLS; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
            )
            .await?;
        admin
            .execute(
                "DO $$ BEGIN \
                   EXECUTE format('GRANT berth_app TO %I', current_user); \
                 EXCEPTION WHEN duplicate_object OR unique_violation OR invalid_grant_operation THEN NULL; END $$",
            )
            .await?;
        admin
            .execute(
                "GRANT USAGE ON SCHEMA public TO berth_app; \
                 GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO berth_app; \
                 REVOKE ALL ON _sqlx_migrations FROM berth_app",
            )
            .await?;
        Ok(())
    }

    /// A transaction scoped to `scope`'s tenant, for raw queries. The row-level security
    /// test uses it to show that an unfiltered query still sees one tenant only.
    pub async fn scoped_transaction(
        &self,
        scope: &berth_core::TenantScope,
    ) -> Result<Transaction<'static, Postgres>> {
        self.begin(TxKind::Tenant(scope.tenant_str()), true).await
    }

    /// A transaction with no tenant set at all.
    pub async fn unscoped_transaction(&self) -> Result<Transaction<'static, Postgres>> {
        self.begin(TxKind::Auth, true).await
    }
}

impl Backend for PgStore {
    type Db = Postgres;

    async fn begin(&self, kind: TxKind<'_>, _write: bool) -> Result<Tx<Postgres>> {
        let mut tx = self.pool.begin().await?;
        let (tenant, operator) = match kind {
            TxKind::Tenant(t) => (t, ""),
            TxKind::Operator => ("", "on"),
            TxKind::OperatorOn(t) => (t, "on"),
            TxKind::Auth => ("", ""),
        };
        sqlx::query(
            "SELECT set_config('berth.tenant_id', $1, true), \
             set_config('berth.operator', $2, true)",
        )
        .bind(tenant)
        .bind(operator)
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }

    async fn scope_tx(tx: &mut Tx<Postgres>, tenant: &str) -> Result<()> {
        sqlx::query("SELECT set_config('berth.tenant_id', $1, true)")
            .bind(tenant)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Serialises version numbering and traffic changes of one agent across processes.
    async fn lock_agent(tx: &mut Tx<Postgres>, tenant: &str, agent: &str) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("berth.agent.{tenant}.{agent}"))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Serialises appends to one tenant's chain across every process sharing the database.
    async fn lock_audit_chain(tx: &mut Tx<Postgres>, tenant: &str) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("berth.audit.{tenant}"))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Appends under the chain lock like any batch: an unlocked `INSERT` could take the
    /// `seq` another process just read under the lock and make its whole change fail.
    async fn append_after_head(
        &self,
        scope: &TenantScope,
        _head: &AuditHead,
        entries: &[NewEntry],
    ) -> Result<Option<Vec<Entry>>> {
        self.append_audit_batch(scope, entries).await.map(Some)
    }
}

#[async_trait::async_trait]
impl Health for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "postgres"
    }
}
