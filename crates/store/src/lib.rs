//! Tenant-scoped storage: capability traits, one contract, SQLite and PostgreSQL backends.
//!
//! Every method that reads or writes tenant data takes a [`TenantScope`]; there is no
//! unscoped query for tenant data. The only methods without a scope are the operator's
//! tenant registry and the key-hash lookup that authentication uses to *obtain* a scope.
//!
//! The traits are here. Their SQL is in `sql/`, one file per capability, compiled for each
//! backend (`sqlite.rs`, `postgres.rs`), which supplies what differs through the `Backend`
//! trait of `backend.rs`. The checks every backend must pass are in `contract/`, one module
//! per capability too.

mod audit_writer;
mod backend;
#[cfg(feature = "contract")]
pub mod contract;
mod error;
pub mod journal;
pub mod model;
pub mod poison;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use berth_audit::{Entry, NewEntry};
use berth_core::{TenantId, TenantScope};

pub use audit_writer::AuditWriter;
pub use error::StoreError;
pub use model::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The operator's registry of tenants. Each write is audited in that tenant's chain.
#[async_trait]
pub trait TenantRegistry: Send + Sync {
    async fn create_tenant(&self, tenant: &Tenant, audit: &NewEntry) -> Result<()>;
    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>>;
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>>;
    async fn find_tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
    async fn update_tenant(
        &self,
        scope: &TenantScope,
        patch: &TenantPatch,
        audit: &NewEntry,
    ) -> Result<Tenant>;
    /// Removes the tenant and every row it owns, in one transaction.
    async fn delete_tenant(&self, scope: &TenantScope) -> Result<()>;
}

/// Tenant API keys. Only hashes are stored.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn create_key(
        &self,
        scope: &TenantScope,
        key: &NewApiKey,
        audit: &NewEntry,
    ) -> Result<ApiKey>;
    async fn list_keys(&self, scope: &TenantScope, page: &PageRequest) -> Result<Page<ApiKey>>;
    async fn revoke_key(
        &self,
        scope: &TenantScope,
        key_id: &str,
        audit: &NewEntry,
    ) -> Result<ApiKey>;
    /// The authentication lookup: which tenant and key a token hash belongs to.
    async fn lookup_key_hash(&self, hash: &str) -> Result<Option<KeyGrant>>;
}

/// Sealed secrets and the wrapped per-tenant data key. Values are opaque ciphertext here.
#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn data_key(&self, scope: &TenantScope) -> Result<Option<WrappedKey>>;
    /// Stores `key` unless the tenant already has one; returns the one that is stored.
    async fn insert_data_key(&self, scope: &TenantScope, key: &WrappedKey) -> Result<WrappedKey>;
    async fn put_secret(
        &self,
        scope: &TenantScope,
        secret: &SealedSecret,
        audit: &NewEntry,
    ) -> Result<()>;
    async fn get_secret(&self, scope: &TenantScope, name: &str) -> Result<Option<SealedSecret>>;
    async fn list_secrets(
        &self,
        scope: &TenantScope,
        page: &PageRequest,
    ) -> Result<Page<SecretMeta>>;
    async fn delete_secret(
        &self,
        scope: &TenantScope,
        name: &str,
        audit: &NewEntry,
    ) -> Result<bool>;
    /// Changes only where a secret may be injected (`None`: unbound); `false` if the
    /// tenant has no secret by that name.
    async fn set_secret_binding(
        &self,
        scope: &TenantScope,
        name: &str,
        binding: Option<&str>,
        audit: &NewEntry,
    ) -> Result<bool>;
}

/// The per-tenant audit hash chain.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, scope: &TenantScope, entry: &NewEntry) -> Result<Entry>;
    /// Appends `entries` in order, in one transaction: all of them or none.
    async fn append_audit_batch(
        &self,
        scope: &TenantScope,
        entries: &[NewEntry],
    ) -> Result<Vec<Entry>>;
    /// Appends `entries` right after `head`, which the caller believes is the chain's
    /// newest entry (the last one it stored itself). `Ok(None)`, with nothing written, when
    /// the chain has moved on since; the caller then appends with `append_audit_batch`.
    /// Saves the read of the head where a backend can detect a stale one without it.
    async fn append_audit_after(
        &self,
        scope: &TenantScope,
        _head: &AuditHead,
        entries: &[NewEntry],
    ) -> Result<Option<Vec<Entry>>> {
        self.append_audit_batch(scope, entries).await.map(Some)
    }
    /// Entries with `seq > after`, in order.
    async fn list_audit(&self, scope: &TenantScope, after: i64, limit: i64) -> Result<Vec<Entry>>;
}

/// The newest entry of a tenant's chain: what the next entry continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

impl AuditHead {
    /// The head of an empty chain.
    pub fn genesis() -> AuditHead {
        AuditHead {
            seq: 0,
            hash: berth_audit::GENESIS.to_owned(),
        }
    }

    /// The head once `entry` is stored.
    pub fn of(entry: &Entry) -> AuditHead {
        AuditHead {
            seq: entry.seq,
            hash: entry.hash.clone(),
        }
    }
}

/// The tenant's policy document, with optimistic concurrency by revision.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    async fn get_policy(&self, scope: &TenantScope) -> Result<Option<StoredPolicy>>;
    /// Stores `document` as the next revision. With `expected`, fails with `Conflict`
    /// unless the current revision is exactly that (0 meaning "no policy yet").
    async fn put_policy(
        &self,
        scope: &TenantScope,
        document: &str,
        expected: Option<i64>,
        audit: &NewEntry,
    ) -> Result<StoredPolicy>;
}

/// The tenant's own LLM providers (bring your own key).
#[async_trait]
pub trait ProviderStore: Send + Sync {
    async fn put_provider(
        &self,
        scope: &TenantScope,
        provider: &TenantProvider,
        audit: &NewEntry,
    ) -> Result<()>;
    async fn get_provider(&self, scope: &TenantScope, name: &str)
    -> Result<Option<TenantProvider>>;
    async fn list_providers(&self, scope: &TenantScope) -> Result<Vec<TenantProvider>>;
    async fn delete_provider(
        &self,
        scope: &TenantScope,
        name: &str,
        audit: &NewEntry,
    ) -> Result<bool>;
}

/// The tenant's MCP servers (the registry of the tool layer).
#[async_trait]
pub trait McpServerStore: Send + Sync {
    /// Registers a server, or replaces one of the same name.
    async fn put_mcp_server(
        &self,
        scope: &TenantScope,
        server: &McpServerRecord,
        audit: &NewEntry,
    ) -> Result<()>;
    async fn get_mcp_server(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<Option<McpServerRecord>>;
    async fn list_mcp_servers(&self, scope: &TenantScope) -> Result<Vec<McpServerRecord>>;
    /// Records a check; `false` when the server is gone (deleted meanwhile).
    async fn record_mcp_check(
        &self,
        scope: &TenantScope,
        name: &str,
        check: &McpServerCheck,
    ) -> Result<bool>;
    async fn delete_mcp_server(
        &self,
        scope: &TenantScope,
        name: &str,
        audit: &NewEntry,
    ) -> Result<bool>;
}

/// Billable usage events; inserting an event whose id exists is a no-op.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Inserts a batch of one tenant's events in one transaction; returns how many were new.
    async fn insert_usage(&self, scope: &TenantScope, events: &[UsageEvent]) -> Result<u64>;
    async fn query_usage(&self, scope: &TenantScope, query: &UsageQuery) -> Result<Vec<UsageRow>>;
}

/// Agents, their immutable versions, and the traffic pointer. Every change to traffic is
/// one transaction, so a promotion or rollback is seen whole by the next request.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Stores a version unless one with the same digest exists; returns it and whether it
    /// was created now.
    async fn create_version(
        &self,
        scope: &TenantScope,
        v: &NewVersion<'_>,
        audit: &NewEntry,
    ) -> Result<(AgentVersion, bool)>;
    async fn list_agents(&self, scope: &TenantScope) -> Result<Vec<AgentSummary>>;
    async fn get_agent(&self, scope: &TenantScope, name: &str) -> Result<Option<AgentSummary>>;
    async fn delete_agent(&self, scope: &TenantScope, name: &str, audit: &NewEntry)
    -> Result<bool>;
    async fn list_versions(&self, scope: &TenantScope, agent: &str) -> Result<Vec<AgentVersion>>;
    async fn get_version(
        &self,
        scope: &TenantScope,
        agent: &str,
        version: i64,
    ) -> Result<Option<AgentVersion>>;
    /// Replaces the split and pins; every version they name must exist (else `NotFound`).
    async fn set_traffic(
        &self,
        scope: &TenantScope,
        agent: &str,
        split: &[SplitEntry],
        pins: &[Pin],
        audit: &NewEntry,
    ) -> Result<Traffic>;
}

/// Runs, their steps, and threads.
#[async_trait]
pub trait RunStore: Send + Sync {
    async fn create_thread(&self, scope: &TenantScope, thread: &ThreadRecord) -> Result<()>;
    async fn get_thread(&self, scope: &TenantScope, id: &str) -> Result<Option<ThreadRecord>>;
    async fn delete_thread(&self, scope: &TenantScope, id: &str) -> Result<bool>;
    async fn insert_run(&self, scope: &TenantScope, run: &RunRecord) -> Result<()>;
    /// Takes a queued run for execution (status `running`, leased until `lease_until_ms`);
    /// `None` when it is not queued (another worker took it, or it was cancelled).
    async fn claim_run(
        &self,
        scope: &TenantScope,
        id: &str,
        lease_until_ms: i64,
    ) -> Result<Option<RunRecord>>;
    /// Extends the lease of a running run and records its usage so far and the steps it
    /// took since the last renewal (a step already stored is skipped, so a retried write,
    /// or the run's end writing its steps again, keeps one copy).
    async fn renew_lease(
        &self,
        scope: &TenantScope,
        id: &str,
        lease_until_ms: i64,
        usage: &str,
        steps: &[RunStep],
    ) -> Result<()>;
    /// Writes a run's final state, its steps and the thread's new messages in one
    /// transaction. A run cancelled meanwhile stays `cancelled` (its steps and usage are
    /// still written); the answer is the status stored.
    async fn finish_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        steps: &[RunStep],
        thread_messages: &[String],
    ) -> Result<String>;
    /// Pauses a running run for approval: its checkpoint, usage, steps so far and the
    /// approvals it waits for, in one transaction. `false` when the run is no longer
    /// running (cancelled meanwhile): nothing is written then.
    async fn pause_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        steps: &[RunStep],
        approvals: &[ApprovalRecord],
    ) -> Result<bool>;
    /// Cancels a run that has not finished (its pending approvals too). Answers the run as
    /// stored afterwards and whether this call changed it; `None` when there is no such run.
    async fn cancel_run(
        &self,
        scope: &TenantScope,
        id: &str,
        audit: &NewEntry,
    ) -> Result<Option<(RunRecord, bool)>>;
    /// Queued runs, oldest first.
    async fn queued_runs(&self, scope: &TenantScope, limit: i64) -> Result<Vec<RunRecord>>;
    /// Marks every running run whose lease ended before `now_ms` as failed with `error`
    /// (JSON); answers their ids.
    async fn fail_expired_leases(
        &self,
        scope: &TenantScope,
        now_ms: i64,
        error: &str,
    ) -> Result<Vec<String>>;
    async fn get_approval(&self, scope: &TenantScope, id: &str) -> Result<Option<ApprovalRecord>>;
    async fn list_approvals(
        &self,
        scope: &TenantScope,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRecord>>;
    /// Records a decision (`approved`, `denied` or `expired`) on a pending approval with its
    /// audit entry; when the run waits for nothing else it is queued again to resume. `None`
    /// when the approval is not pending.
    async fn decide_approval(
        &self,
        scope: &TenantScope,
        id: &str,
        status: &str,
        reason: Option<&str>,
        decided_by: &str,
        audit: &NewEntry,
    ) -> Result<Option<ApprovalRecord>>;
    /// Pending approvals whose time ran out before `now_ms`.
    async fn expired_approvals(
        &self,
        scope: &TenantScope,
        now_ms: i64,
    ) -> Result<Vec<ApprovalRecord>>;
    /// Records the approval a call through `/mcp` waits for (it belongs to no run).
    async fn create_call_approval(
        &self,
        scope: &TenantScope,
        approval: &ApprovalRecord,
        audit: &NewEntry,
    ) -> Result<()>;
    /// Uses up an approved, unexpired `/mcp` approval of this key and caller (`started_by`,
    /// an audit actor: JWT callers share the absent key id) for exactly this tool and
    /// these arguments (it becomes `used`), so one approval allows one call.
    async fn use_call_approval(
        &self,
        scope: &TenantScope,
        key_id: Option<&str>,
        started_by: &str,
        tool: &str,
        arguments: &str,
        now_ms: i64,
    ) -> Result<Option<ApprovalRecord>>;
    async fn get_run(&self, scope: &TenantScope, id: &str) -> Result<Option<RunRecord>>;
    async fn list_runs(
        &self,
        scope: &TenantScope,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<RunRecord>>;
    async fn run_steps(&self, scope: &TenantScope, run_id: &str) -> Result<Vec<RunStep>>;
}

/// The key-value store of component agents (scoped to tenant and agent), and the bundles
/// their code comes from.
#[async_trait]
pub trait KvStore: Send + Sync {
    async fn kv_get(&self, scope: &TenantScope, agent: &str, key: &str) -> Result<Option<Vec<u8>>>;
    async fn kv_set(&self, scope: &TenantScope, agent: &str, key: &str, value: &[u8])
    -> Result<()>;
    async fn kv_delete(&self, scope: &TenantScope, agent: &str, key: &str) -> Result<()>;
    /// Bytes the tenant keeps stored: bundles, key-value data, thread messages and traces
    /// (the `stored bytes` meter).
    async fn stored_bytes(&self, scope: &TenantScope) -> Result<i64>;
    /// The tar.gz a version was deployed from (`None`: deployed as JSON, or no such version).
    async fn version_bundle(
        &self,
        scope: &TenantScope,
        agent: &str,
        version: i64,
    ) -> Result<Option<Vec<u8>>>;
}

/// Budget counters with reservations: reserve before a call, settle after it.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Reserves up to `want` nano-USD on every budget (at least `floor`): the amount is the
    /// least headroom of the hard budgets, capped at `want`. `None` (nothing held) when some
    /// hard budget has less than `floor` left. Holds expire at `expires_at_ms`.
    async fn reserve_budget(
        &self,
        scope: &TenantScope,
        hold_id: &str,
        budgets: &[BudgetLimit],
        want: i64,
        floor: i64,
        expires_at_ms: i64,
    ) -> Result<Option<i64>>;
    /// Releases a hold and adds the real cost to every budget it held, once: a second
    /// settle of the same hold changes nothing and answers nothing. A hold that expired
    /// before its call ended is still charged, to `budgets` (its counters), so a call longer
    /// than the hold's time to live is not free.
    async fn settle_budget(
        &self,
        scope: &TenantScope,
        hold_id: &str,
        actual: i64,
        budgets: &[String],
    ) -> Result<Vec<Settled>>;
    /// Creates a budget's counter with what was already spent in its period, unless it
    /// exists (a budget set mid-month starts from the month's spend, not from zero).
    async fn init_budget(&self, scope: &TenantScope, budget: &str, spent: i64) -> Result<()>;
    /// Releases holds whose time ran out (their calls never settled); answers how many.
    async fn release_expired_holds(&self, scope: &TenantScope, now_ms: i64) -> Result<u64>;
    async fn budget_states(
        &self,
        scope: &TenantScope,
        budgets: &[String],
    ) -> Result<Vec<BudgetState>>;
}

/// Liveness of the backing database.
#[async_trait]
pub trait Health: Send + Sync {
    async fn ping(&self) -> Result<()>;
    fn backend(&self) -> &'static str;
}

/// Everything the server needs from storage.
pub trait Store:
    TenantRegistry
    + KeyStore
    + SecretStore
    + AuditStore
    + PolicyStore
    + ProviderStore
    + McpServerStore
    + UsageStore
    + AgentStore
    + RunStore
    + BudgetStore
    + KvStore
    + Health
{
}
impl<T> Store for T where
    T: TenantRegistry
        + KeyStore
        + SecretStore
        + AuditStore
        + PolicyStore
        + ProviderStore
        + McpServerStore
        + McpServerStore
        + UsageStore
        + AgentStore
        + RunStore
        + BudgetStore
        + KvStore
        + Health
{
}

/// Opens the backend named by `url` (`sqlite://…` or `postgres://…`) and applies migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::open(url).await?))
    } else {
        Err(StoreError::Config(format!(
            "database_url must start with sqlite:// or postgres://, got {:?}",
            url.split(':').next().unwrap_or_default()
        )))
    }
}
