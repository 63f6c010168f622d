//! Write-behind for audit entries on hot paths (tool calls): callers queue an entry and go
//! on; a tracked background task appends everything queued, per tenant, in one write
//! (group commit), as soon as the previous write is done. It remembers each chain's head,
//! so that a write need not read it first where the store can tell a stale one.
//!
//! An entry keeps the time it was queued as its `at`. Readers that must see every entry
//! queued so far call [`AuditWriter::flush`] first. With a journal
//! ([`AuditWriter::start_journaled`]) an entry is durable on local disk before `append`
//! returns, and a crash loses none; without one, entries still queued when the process is
//! killed are lost (about one write: a millisecond or two). On shutdown the queue is
//! drained.

use crate::journal::{Journal, Replayed};
use crate::{AuditHead, AuditStore, StoreError};
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{TenantId, TenantScope};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

enum Message {
    /// An entry, and the journal segment that holds it (when there is a journal).
    Entry(Box<(TenantScope, NewEntry, Option<u64>)>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Message>,
    journal: Option<Arc<Journal<NewEntry>>>,
}

/// Entries written in one turn of the writer at most (over all tenants).
const BATCH: usize = 1000;
/// Entries that may wait before `append` applies back-pressure.
const CAPACITY: usize = 20_000;

impl AuditWriter {
    /// Starts the writer task on `tasks`. It ends, after writing everything queued, when
    /// `shutdown` is cancelled or every `AuditWriter` clone is dropped.
    pub fn start(
        store: Arc<dyn AuditStore>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        tasks.spawn(run(store, rx, shutdown, None));
        AuditWriter { tx, journal: None }
    }

    /// [`AuditWriter::start`] with a journal in `dir` (see [`crate::journal`]): entries an
    /// earlier process journaled and did not store are stored first (those already in the
    /// chain, a crash between the write and the journal's cleanup, are recognised and
    /// skipped), and from now on [`AuditWriter::append`] returns once its entry is durable.
    pub async fn start_journaled(
        store: Arc<dyn AuditStore>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        let (journal, replayed) = Journal::<NewEntry>::open(dir, "audit")?;
        let replayed = not_yet_stored(store.as_ref(), replayed, &journal).await;
        tasks.spawn(journal.clone().run(shutdown.clone()));
        let (tx, rx) = mpsc::channel(CAPACITY);
        tasks.spawn(run(store, rx, shutdown, Some(journal.clone())));
        if !replayed.is_empty() {
            tracing::info!(
                entries = replayed.len(),
                "storing audit entries journaled before a crash"
            );
        }
        for r in replayed {
            let scope = TenantScope::for_system(r.tenant);
            let _ = tx
                .send(Message::Entry(Box::new((scope, r.record, Some(r.segment)))))
                .await;
        }
        Ok(AuditWriter {
            tx,
            journal: Some(journal),
        })
    }

    /// Queues `entry` for the tenant's chain, stamped with the time now unless it has one.
    /// Waits only if the writer is far behind (back-pressure, not loss).
    pub async fn append(&self, scope: &TenantScope, entry: NewEntry) {
        let entry = match entry.at_ms {
            Some(_) => entry,
            None => entry.at(now_ms()),
        };
        let segment = match &self.journal {
            Some(j) => {
                let (seq, segment) = j.append(scope.tenant(), &entry);
                j.synced(seq).await;
                Some(segment)
            }
            None => None,
        };
        let msg = Message::Entry(Box::new((scope.clone(), entry, segment)));
        if let Err(e) = self.tx.send(msg).await {
            // Only after shutdown: say so loudly rather than lose it silently.
            if let Message::Entry(e) = e.0 {
                tracing::error!(tenant = %e.0.tenant(), action = %e.1.action, target = %e.1.target,
                    "audit entry after the audit writer stopped");
            }
        }
    }

    /// Waits until every entry queued before this call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Tenants whose chain head the writer remembers at most; past that it starts over.
const HEADS: usize = 10_000;

/// The newest entry the writer stored in each tenant's chain, so that the next append can
/// skip reading it (`append_audit_after`). Only a hint: a stale head is detected by the
/// store and the append redone the usual way.
#[derive(Default)]
struct Heads(HashMap<TenantId, AuditHead>);

impl Heads {
    async fn append(
        &mut self,
        store: &dyn AuditStore,
        scope: &TenantScope,
        entries: &[NewEntry],
    ) -> crate::Result<()> {
        let tenant = scope.tenant();
        let known = self.0.remove(tenant);
        let stored = match &known {
            Some(head) => match store.append_audit_after(scope, head, entries).await? {
                Some(stored) => stored,
                None => store.append_audit_batch(scope, entries).await?,
            },
            None => store.append_audit_batch(scope, entries).await?,
        };
        if let Some(last) = stored.last() {
            if self.0.len() >= HEADS {
                self.0.clear();
            }
            self.0.insert(tenant.clone(), AuditHead::of(last));
        }
        Ok(())
    }
}

async fn run(
    store: Arc<dyn AuditStore>,
    mut rx: mpsc::Receiver<Message>,
    shutdown: CancellationToken,
    journal: Option<Arc<Journal<NewEntry>>>,
) {
    let mut heads = Heads::default();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            msg = rx.recv() => msg,
            _ = shutdown.cancelled(), if !rx.is_closed() => {
                // Refuse new entries; the loop keeps receiving what is already queued and
                // ends when `recv` reports the channel empty and closed.
                rx.close();
                continue;
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        let stored = write(store.as_ref(), &mut heads, &mut batch).await;
        if let Some(j) = &journal {
            j.stored(&stored);
        }
    }
}

/// Of the entries a crash left in the journal, those not in their chain yet. Those that
/// are (the crash came after the write, before the journal's cleanup) were the chain's
/// last entries: each tenant's tail is read and compared, field by field, time included.
async fn not_yet_stored(
    store: &dyn AuditStore,
    replayed: Vec<Replayed<NewEntry>>,
    journal: &Journal<NewEntry>,
) -> Vec<Replayed<NewEntry>> {
    let mut by_tenant: HashMap<TenantId, Vec<Replayed<NewEntry>>> = HashMap::new();
    for r in replayed {
        by_tenant.entry(r.tenant.clone()).or_default().push(r);
    }
    let mut keep = Vec::new();
    for (tenant, entries) in by_tenant {
        let scope = TenantScope::for_system(tenant);
        let tail = chain_tail(store, &scope, entries.len() + 2 * BATCH).await;
        let mut already: BTreeMap<u64, usize> = BTreeMap::new();
        for r in entries {
            let e = &r.record;
            let stored = tail.iter().any(|t| {
                Some(t.at_ms) == e.at_ms
                    && t.actor == e.actor
                    && t.action == e.action
                    && t.target == e.target
                    && t.details == e.details
            });
            if stored {
                *already.entry(r.segment).or_insert(0) += 1;
            } else {
                keep.push(r);
            }
        }
        journal.stored(&already);
    }
    keep
}

/// The last `n` entries (about) of a chain: its head is found by exponential then binary
/// search on `seq`, so a long chain costs a few dozen small reads, not a full scan.
async fn chain_tail(
    store: &dyn AuditStore,
    scope: &TenantScope,
    n: usize,
) -> Vec<berth_audit::Entry> {
    let exists = |seq: i64| async move {
        matches!(store.list_audit(scope, seq - 1, 1).await, Ok(v) if !v.is_empty())
    };
    let (mut lo, mut hi) = (0i64, 1i64);
    while exists(hi).await {
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    // `lo` exists (or is 0), `hi` does not.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if exists(mid).await {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let from = (lo - i64::try_from(n).unwrap_or(i64::MAX)).max(0);
    store
        .list_audit(scope, from, i64::try_from(n).unwrap_or(i64::MAX) + 1)
        .await
        .unwrap_or_default()
}

/// Writes the entries of `batch`, one write per tenant in arrival order, then answers
/// the flushes in it. A store that is down is waited for with backoff until the entries
/// are stored (they stay in memory meanwhile, and `append` waits once the queue is full);
/// an entry the store refuses is stored cleaned of control characters or set aside, so
/// it never holds up the others (see [`crate::poison::write_isolating`]).
async fn write(
    store: &dyn AuditStore,
    heads: &mut Heads,
    batch: &mut Vec<Message>,
) -> BTreeMap<u64, usize> {
    let mut tenants: Vec<(TenantScope, Vec<NewEntry>)> = Vec::new();
    let mut index: HashMap<TenantId, usize> = HashMap::new();
    let mut flushed = Vec::new();
    let mut segments: BTreeMap<u64, usize> = BTreeMap::new();
    for msg in batch.drain(..) {
        match msg {
            Message::Entry(e) => {
                let (scope, entry, segment) = *e;
                if let Some(s) = segment {
                    *segments.entry(s).or_insert(0) += 1;
                }
                let i = *index.entry(scope.tenant().clone()).or_insert_with(|| {
                    tenants.push((scope, Vec::new()));
                    tenants.len() - 1
                });
                tenants[i].1.push(entry);
            }
            Message::Flush(done) => flushed.push(done),
        }
    }
    for (scope, entries) in tenants {
        let mut sink = Sink {
            store,
            heads: &mut *heads,
            scope: &scope,
        };
        let describe = |e: &NewEntry| {
            format!(
                "tenant {} audit entry {:?} on {:?} by {:?}",
                scope.tenant(),
                e.action,
                e.target,
                e.actor
            )
        };
        crate::poison::write_isolating("audit", &mut sink, entries, cleaned, &describe).await;
    }
    for done in flushed {
        let _ = done.send(());
    }
    segments
}

struct Sink<'a> {
    store: &'a dyn AuditStore,
    heads: &'a mut Heads,
    scope: &'a TenantScope,
}

#[async_trait::async_trait]
impl crate::poison::BatchSink<NewEntry> for Sink<'_> {
    async fn insert(&mut self, rows: &[NewEntry]) -> Result<(), StoreError> {
        self.heads.append(self.store, self.scope, rows).await
    }
}

/// `entry` with control characters removed from its text.
fn cleaned(entry: &NewEntry) -> NewEntry {
    use crate::poison::{json_without_controls, without_controls};
    NewEntry {
        actor: without_controls(&entry.actor),
        action: without_controls(&entry.action),
        target: without_controls(&entry.target),
        details: json_without_controls(&entry.details),
        at_ms: entry.at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::new_tenant;
    use crate::{SqliteStore, TenantRegistry};
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn entries_from_many_callers_land_in_order_per_tenant_and_the_chains_verify() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = Arc::new(SqliteStore::open(&url).await.unwrap());
        let a = new_tenant(store.as_ref(), "a").await;
        let b = new_tenant(store.as_ref(), "b").await;
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let writer = AuditWriter::start(store.clone(), &tasks, shutdown.clone());

        let mut callers = Vec::new();
        for caller in 0..8 {
            let (writer, a, b) = (writer.clone(), a.clone(), b.clone());
            callers.push(tokio::spawn(async move {
                for i in 0..50 {
                    let scope = if i % 2 == 0 { &a } else { &b };
                    let entry = NewEntry::new("k", "tool.call", format!("{caller}:{i}"), json!(i));
                    writer.append(scope, entry).await;
                }
            }));
        }
        for c in callers {
            c.await.unwrap();
        }
        // A stamped entry keeps its time; an unstamped one gets the time it was queued.
        let before = now_ms();
        writer
            .append(&a, NewEntry::new("k", "late", "x", json!(null)).at(1234))
            .await;
        writer
            .append(&a, NewEntry::new("k", "now", "y", json!(null)))
            .await;
        writer.flush().await;

        for scope in [&a, &b] {
            let entries = store.list_audit(scope, 0, 1000).await.unwrap();
            let ours = entries.iter().filter(|e| e.action == "tool.call").count();
            assert_eq!(ours, 200, "every queued entry is stored once after flush");
            assert!(berth_audit::verify(scope.tenant_str(), &entries).ok);
            // One caller's entries keep their order.
            let mine: Vec<&str> = entries
                .iter()
                .filter(|e| e.target.starts_with("3:"))
                .map(|e| e.target.as_str())
                .collect();
            let mut sorted = mine.clone();
            sorted.sort_by_key(|t| t[2..].parse::<u32>().unwrap());
            assert_eq!(mine, sorted);
        }
        let entries = store.list_audit(&a, 0, 1000).await.unwrap();
        let late = entries.iter().find(|e| e.action == "late").unwrap();
        assert_eq!(late.at_ms, 1234);
        let now = entries.iter().find(|e| e.action == "now").unwrap();
        assert!(now.at_ms >= before && now.at_ms <= now_ms());

        // The entries of a tenant deleted meanwhile are dropped, not retried for ever.
        let c = new_tenant(store.as_ref(), "c").await;
        store.delete_tenant(&c).await.unwrap();
        writer
            .append(&c, NewEntry::new("k", "gone", "c", json!(null)))
            .await;
        writer
            .append(&a, NewEntry::new("k", "after", "a", json!(null)))
            .await;
        tokio::time::timeout(Duration::from_secs(5), writer.flush())
            .await
            .expect("a deleted tenant's entry does not block the writer");
        let entries = store.list_audit(&a, 0, 1000).await.unwrap();
        assert_eq!(entries.last().unwrap().action, "after");

        // Shutdown drains what is queued; the task then ends.
        writer
            .append(&b, NewEntry::new("k", "last", "z", json!(null)))
            .await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        let entries = store.list_audit(&b, 0, 1000).await.unwrap();
        assert_eq!(entries.last().unwrap().action, "last");
    }

    /// An audit store in front of a real one that refuses, like PostgreSQL, any batch
    /// with a NUL byte in an entry's text.
    struct Picky(Arc<SqliteStore>);

    fn poisoned(entries: &[NewEntry]) -> bool {
        entries
            .iter()
            .any(|e| e.target.contains('\0') || e.details.to_string().contains("\\u0000"))
    }

    #[async_trait::async_trait]
    impl AuditStore for Picky {
        async fn append_audit(
            &self,
            scope: &TenantScope,
            entry: &NewEntry,
        ) -> crate::Result<berth_audit::Entry> {
            self.0.append_audit(scope, entry).await
        }
        async fn append_audit_batch(
            &self,
            scope: &TenantScope,
            entries: &[NewEntry],
        ) -> crate::Result<Vec<berth_audit::Entry>> {
            if poisoned(entries) {
                return Err(StoreError::Corrupt("invalid byte sequence: 0x00".into()));
            }
            self.0.append_audit_batch(scope, entries).await
        }
        async fn list_audit(
            &self,
            scope: &TenantScope,
            after: i64,
            limit: i64,
        ) -> crate::Result<Vec<berth_audit::Entry>> {
            self.0.list_audit(scope, after, limit).await
        }
    }

    #[tokio::test]
    async fn a_refused_entry_is_stored_cleaned_and_the_others_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = Arc::new(SqliteStore::open(&url).await.unwrap());
        let a = new_tenant(store.as_ref(), "a").await;
        let tasks = TaskTracker::new();
        let writer = AuditWriter::start(
            Arc::new(Picky(store.clone())),
            &tasks,
            CancellationToken::new(),
        );
        for i in 0..300 {
            let target = if i == 150 {
                "tool\0name".to_owned()
            } else {
                format!("t{i}")
            };
            let details = if i == 200 {
                json!({"args": "x\u{0}y"})
            } else {
                json!(null)
            };
            writer
                .append(&a, NewEntry::new("k", "tool.call", &target, details))
                .await;
        }
        tokio::time::timeout(Duration::from_secs(60), writer.flush())
            .await
            .expect("a poison entry does not stall the writer");
        let all = store.list_audit(&a, 0, 1000).await.unwrap();
        assert!(
            berth_audit::verify(a.tenant().as_str(), &all).ok,
            "the chain verifies"
        );
        let entries: Vec<_> = all
            .into_iter()
            .filter(|e| e.action == "tool.call")
            .collect();
        assert_eq!(entries.len(), 300, "every entry is kept");
        assert_eq!(entries[150].target, "toolname");
        assert_eq!(entries[200].details, json!({"args": "xy"}));
        assert_eq!(entries[299].target, "t299", "order is kept");
    }

    /// A store that is down for good: entries reach only the journal.
    struct Down;

    #[async_trait::async_trait]
    impl AuditStore for Down {
        async fn append_audit(
            &self,
            _: &TenantScope,
            _: &NewEntry,
        ) -> crate::Result<berth_audit::Entry> {
            Err(StoreError::Backend(sqlx::Error::PoolTimedOut))
        }
        async fn append_audit_batch(
            &self,
            _: &TenantScope,
            _: &[NewEntry],
        ) -> crate::Result<Vec<berth_audit::Entry>> {
            Err(StoreError::Backend(sqlx::Error::PoolTimedOut))
        }
        async fn list_audit(
            &self,
            _: &TenantScope,
            _: i64,
            _: i64,
        ) -> crate::Result<Vec<berth_audit::Entry>> {
            Err(StoreError::Backend(sqlx::Error::PoolTimedOut))
        }
    }

    /// Issue 14, item 15: an entry `append` returned for is in the chain after a crash,
    /// whether the crash came before the write (replayed from the journal) or after it
    /// (recognised in the chain, not appended twice).
    #[tokio::test]
    async fn journaled_entries_survive_a_crash_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        let url = format!("sqlite://{}", dir.path().join("j.db").display());
        let store = Arc::new(SqliteStore::open(&url).await.unwrap());
        let a = new_tenant(store.as_ref(), "a").await;
        let tool_calls = |from: usize| {
            (from..from + 50)
                .map(|i| NewEntry::new("key_1", "tool.call", format!("t{i}"), json!({"i": i})))
                .collect::<Vec<_>>()
        };
        // 1. Written and stored; the process dies before the journal is cleaned up.
        let tasks = TaskTracker::new();
        let w =
            AuditWriter::start_journaled(store.clone(), &tasks, CancellationToken::new(), &journal)
                .await
                .unwrap();
        for e in tool_calls(0) {
            w.append(&a, e).await;
        }
        w.flush().await;
        drop(w);
        // 2. Journaled while the database was down; the process dies before storing them.
        let tasks2 = TaskTracker::new();
        let w = AuditWriter::start_journaled(
            Arc::new(Down),
            &tasks2,
            CancellationToken::new(),
            &journal,
        )
        .await
        .unwrap();
        for e in tool_calls(50) {
            tokio::time::timeout(Duration::from_secs(5), w.append(&a, e))
                .await
                .expect("append returns once journaled, whatever the database");
        }
        drop(w);
        // The next start stores what was missing, once.
        let tasks3 = TaskTracker::new();
        let w = AuditWriter::start_journaled(
            store.clone(),
            &tasks3,
            CancellationToken::new(),
            &journal,
        )
        .await
        .unwrap();
        w.flush().await;
        let chain = store.list_audit(&a, 0, 10_000).await.unwrap();
        let targets: Vec<&str> = chain
            .iter()
            .filter(|e| e.action == "tool.call")
            .map(|e| e.target.as_str())
            .collect();
        let want: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        assert_eq!(targets, want, "each entry once, in order");
        assert!(berth_audit::verify(a.tenant().as_str(), &chain).ok);
    }
}
