//! Write-behind for audit entries on hot paths (tool calls): callers queue an entry and go
//! on; a tracked background task appends everything queued, per tenant, in one write
//! (group commit), as soon as the previous write is done. It remembers each chain's head,
//! so that a write need not read it first where the store can tell a stale one.
//!
//! An entry keeps the time it was queued as its `at`. Readers that must see every entry
//! queued so far call [`AuditWriter::flush`] first. Entries still queued when the process
//! is killed are lost (the window is about one write: a millisecond or two); on shutdown
//! the queue is drained.

use crate::{AuditHead, AuditStore};
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{TenantId, TenantScope};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

enum Message {
    Entry(Box<(TenantScope, NewEntry)>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Message>,
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
        tasks.spawn(run(store, rx, shutdown));
        AuditWriter { tx }
    }

    /// Queues `entry` for the tenant's chain, stamped with the time now unless it has one.
    /// Waits only if the writer is far behind (back-pressure, not loss).
    pub async fn append(&self, scope: &TenantScope, entry: NewEntry) {
        let entry = match entry.at_ms {
            Some(_) => entry,
            None => entry.at(now_ms()),
        };
        let msg = Message::Entry(Box::new((scope.clone(), entry)));
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
        write(store.as_ref(), &mut heads, &mut batch).await;
    }
}

/// Writes the entries of `batch`, one write per tenant in arrival order, then answers
/// the flushes in it. A failed write is retried with backoff until it is stored: the
/// entries stay in memory meanwhile, and `append` waits once the queue is full.
async fn write(store: &dyn AuditStore, heads: &mut Heads, batch: &mut Vec<Message>) {
    let mut tenants: Vec<(TenantScope, Vec<NewEntry>)> = Vec::new();
    let mut index: HashMap<TenantId, usize> = HashMap::new();
    let mut flushed = Vec::new();
    for msg in batch.drain(..) {
        match msg {
            Message::Entry(e) => {
                let (scope, entry) = *e;
                let i = *index.entry(scope.tenant().clone()).or_insert_with(|| {
                    tenants.push((scope, Vec::new()));
                    tenants.len() - 1
                });
                tenants[i].1.push(entry);
            }
            Message::Flush(done) => flushed.push(done),
        }
    }
    for (scope, entries) in &tenants {
        let mut delay = Duration::from_millis(50);
        while let Err(e) = heads.append(store, scope, entries).await {
            if e.is_missing_tenant() {
                tracing::warn!(tenant = %scope.tenant(), entries = entries.len(),
                    "audit entries of a deleted tenant dropped");
                break;
            }
            tracing::warn!(tenant = %scope.tenant(), entries = entries.len(), error = %e,
                "audit write failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
    for done in flushed {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::new_tenant;
    use crate::{SqliteStore, TenantRegistry};
    use serde_json::json;

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
}
