//! The usage recorder: request handlers hand events to a channel and return; a tracked
//! background task writes them in batches, grouped by tenant, waiting out a store that
//! is down and setting aside a row the store refuses (see [`write_tenant`]).
//! Each event carries its idempotency key, so a batch retried after a partial failure
//! counts every event once.

use berth_core::{TenantId, TenantScope};
use berth_store::journal::Journal;
use berth_store::poison::{BatchSink, without_controls, write_isolating};
use berth_store::{UsageEvent, UsageStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

enum Message {
    /// An event, and the journal segment that holds it (when there is a journal).
    Event(Box<(TenantScope, UsageEvent, Option<u64>)>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<Message>,
    journal: Option<Arc<Journal<UsageEvent>>>,
}

/// Events buffered before a write is forced.
const BATCH: usize = 1000;
/// How long an event may wait for its batch.
const INTERVAL: Duration = Duration::from_millis(200);
/// Events that may wait in the channel before `record` applies back-pressure.
const CAPACITY: usize = 100_000;

impl UsageRecorder {
    /// Starts the writer task on `tasks`. It ends, after writing everything queued, when
    /// `shutdown` is cancelled or every `UsageRecorder` clone is dropped.
    pub fn start(
        store: Arc<dyn UsageStore>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        tasks.spawn(run(store, rx, shutdown, None));
        UsageRecorder { tx, journal: None }
    }

    /// [`UsageRecorder::start`] with a journal in `dir` (see [`berth_store::journal`]): what an
    /// earlier process journaled and did not store is stored first, and from now on
    /// [`UsageRecorder::record`] returns once its event is durable on local disk.
    pub async fn start_journaled(
        store: Arc<dyn UsageStore>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        let (journal, replayed) = Journal::open(dir, "usage")?;
        tasks.spawn(journal.clone().run(shutdown.clone()));
        let (tx, rx) = mpsc::channel(CAPACITY);
        tasks.spawn(run(store, rx, shutdown, Some(journal.clone())));
        if !replayed.is_empty() {
            tracing::info!(
                events = replayed.len(),
                "storing usage events journaled before a crash"
            );
        }
        for r in replayed {
            let scope = TenantScope::for_system(r.tenant);
            let _ = tx
                .send(Message::Event(Box::new((scope, r.record, Some(r.segment)))))
                .await;
        }
        Ok(UsageRecorder {
            tx,
            journal: Some(journal),
        })
    }

    /// Waits until every event recorded so far is durable (journaled); at once without a
    /// journal. A stream's last bytes wait for this, so an answered call is a billed one.
    pub async fn durable(&self) {
        if let Some(j) = &self.journal {
            j.barrier().await;
        }
    }

    /// Queues an event. Waits only if the writer is far behind (back-pressure, not loss).
    pub async fn record(&self, scope: &TenantScope, event: UsageEvent) {
        let segment = match &self.journal {
            Some(j) => {
                let (seq, segment) = j.append(scope.tenant(), &event);
                j.synced(seq).await;
                Some(segment)
            }
            None => None,
        };
        let msg = Message::Event(Box::new((scope.clone(), event, segment)));
        if let Err(e) = self.tx.send(msg).await {
            // Only after shutdown: say so loudly rather than lose it silently.
            if let Message::Event(ev) = e.0 {
                tracing::error!(tenant = %ev.0.tenant(), event = %ev.1.id, "usage event after recorder shutdown");
            }
        }
    }

    /// Queues an event without waiting, for callers that cannot (a `Drop`). If the
    /// channel is full, a task delivers it.
    pub fn record_detached(&self, scope: &TenantScope, event: UsageEvent) {
        // Journaled now; durable by the next group commit ([`UsageRecorder::durable`]).
        let segment = self
            .journal
            .as_ref()
            .map(|j| j.append(scope.tenant(), &event).1);
        let msg = Message::Event(Box::new((scope.clone(), event, segment)));
        if let Err(mpsc::error::TrySendError::Full(msg)) = self.tx.try_send(msg) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(msg).await;
            });
        }
    }

    /// Waits until every event queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    store: Arc<dyn UsageStore>,
    mut rx: mpsc::Receiver<Message>,
    shutdown: CancellationToken,
    journal: Option<Arc<Journal<UsageEvent>>>,
) {
    let mut pending: HashMap<TenantId, (TenantScope, Vec<UsageEvent>)> = HashMap::new();
    // Events of each journal segment among `pending`: told to the journal once stored.
    let mut segments: BTreeMap<u64, usize> = BTreeMap::new();
    let mut count = 0usize;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Message::Event(ev)) => {
                    let (scope, event, segment) = *ev;
                    pending.entry(scope.tenant().clone()).or_insert_with(|| (scope, Vec::new())).1.push(event);
                    if let Some(s) = segment {
                        *segments.entry(s).or_insert(0) += 1;
                    }
                    count += 1;
                    if count >= BATCH {
                        write_all(store.as_ref(), journal.as_deref(), &mut pending, &mut segments).await;
                        count = 0;
                    }
                }
                Some(Message::Flush(done)) => {
                    write_all(store.as_ref(), journal.as_deref(), &mut pending, &mut segments).await;
                    count = 0;
                    let _ = done.send(());
                }
                None => {
                    write_all(store.as_ref(), journal.as_deref(), &mut pending, &mut segments).await;
                    return;
                }
            },
            _ = shutdown.cancelled(), if !rx.is_closed() => {
                // Refuse new events; the loop keeps receiving what is already queued and
                // ends when `recv` reports the channel empty and closed.
                rx.close();
            }
            _ = tick.tick() => {
                if count > 0 {
                    write_all(store.as_ref(), journal.as_deref(), &mut pending, &mut segments).await;
                    count = 0;
                }
            }
        }
    }
}

/// Writes every pending batch, one tenant at a time (a tenant's failure is its own).
async fn write_all(
    store: &dyn UsageStore,
    journal: Option<&Journal<UsageEvent>>,
    pending: &mut HashMap<TenantId, (TenantScope, Vec<UsageEvent>)>,
    segments: &mut BTreeMap<u64, usize>,
) {
    for (_, (scope, events)) in pending.drain() {
        write_tenant(store, &scope, events).await;
    }
    // Every event of these segments is stored now: the journal may let them go.
    let stored = std::mem::take(segments);
    if let Some(j) = journal {
        j.stored(&stored);
    }
}

/// Writes one tenant's events: a store that is down is waited for, a row it refuses is
/// set aside (see [`berth_store::poison::write_isolating`]), never retried for ever.
async fn write_tenant(store: &dyn UsageStore, scope: &TenantScope, events: Vec<UsageEvent>) {
    let mut sink = Sink { store, scope };
    let describe = |e: &UsageEvent| {
        format!(
            "tenant {} usage event {:?} cost_nano {} tokens {}+{}",
            scope.tenant(),
            e.id,
            e.cost_nano,
            e.input_tokens,
            e.output_tokens
        )
    };
    write_isolating("usage", &mut sink, events, cleaned, &describe).await;
}

struct Sink<'a> {
    store: &'a dyn UsageStore,
    scope: &'a TenantScope,
}

#[async_trait::async_trait]
impl BatchSink<UsageEvent> for Sink<'_> {
    async fn insert(&mut self, rows: &[UsageEvent]) -> Result<(), berth_store::StoreError> {
        self.store.insert_usage(self.scope, rows).await.map(|_| ())
    }
}
/// `row` with control characters removed from its text fields (its tokens and cost kept).
fn cleaned(row: &UsageEvent) -> UsageEvent {
    let clean = without_controls;
    let clean_opt = |s: &Option<String>| s.as_deref().map(clean);
    UsageEvent {
        id: clean(&row.id),
        kind: clean(&row.kind),
        key_id: clean_opt(&row.key_id),
        agent: clean_opt(&row.agent),
        tags: clean_opt(&row.tags),
        provider: clean_opt(&row.provider),
        model: clean_opt(&row.model),
        status: clean(&row.status),
        run_id: clean_opt(&row.run_id),
        ..row.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::contract::new_tenant;
    use berth_store::{SqliteStore, Store, UsageQuery};

    #[tokio::test]
    async fn events_are_batched_flushed_and_drained_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&format!("sqlite://{}", dir.path().join("b.db").display()))
                .await
                .unwrap(),
        );
        let a = new_tenant(store.as_ref(), "meter-a").await;
        let tasks = TaskTracker::new();
        let usage: Arc<dyn UsageStore> = store.clone();
        let shutdown = CancellationToken::new();
        let rec = UsageRecorder::start(usage, &tasks, shutdown.clone());
        for i in 0..2500 {
            let ev = UsageEvent {
                id: format!("evt_{i}"),
                kind: "llm".into(),
                status: "ok".into(),
                cost_nano: 3,
                ..Default::default()
            };
            rec.record(&a, ev).await;
        }
        // A retried event (same id) counts once.
        rec.record(
            &a,
            UsageEvent {
                id: "evt_7".into(),
                kind: "llm".into(),
                status: "ok".into(),
                cost_nano: 3,
                ..Default::default()
            },
        )
        .await;
        rec.flush().await;
        let rows = store.query_usage(&a, &UsageQuery::default()).await.unwrap();
        assert_eq!((rows[0].requests, rows[0].cost_nano), (2500, 7500));
        // Events queued just before shutdown are still written.
        rec.record(
            &a,
            UsageEvent {
                id: "evt_last".into(),
                kind: "llm".into(),
                status: "ok".into(),
                ..Default::default()
            },
        )
        .await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        assert_eq!(
            store.query_usage(&a, &UsageQuery::default()).await.unwrap()[0].requests,
            2501
        );
    }

    /// A store double in front of a real one: down for its first `down` writes, then
    /// refusing, like PostgreSQL, any batch with a NUL byte in a text field.
    struct Picky {
        inner: Arc<dyn Store>,
        down: std::sync::atomic::AtomicU32,
        calls: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl UsageStore for Picky {
        async fn insert_usage(
            &self,
            scope: &TenantScope,
            events: &[UsageEvent],
        ) -> berth_store::Result<u64> {
            use std::sync::atomic::Ordering::SeqCst;
            self.calls.fetch_add(1, SeqCst);
            if self.down.load(SeqCst) > 0 {
                self.down.fetch_sub(1, SeqCst);
                return Err(berth_store::StoreError::Backend(sqlx::Error::PoolTimedOut));
            }
            let poisoned = |e: &UsageEvent| {
                [&e.model, &e.agent, &e.tags]
                    .iter()
                    .any(|f| f.as_deref().is_some_and(|v| v.contains('\0')))
                    || e.id.contains('\0')
            };
            if events.iter().any(poisoned) {
                return Err(berth_store::StoreError::Corrupt(
                    "invalid byte sequence for encoding \"UTF8\": 0x00".into(),
                ));
            }
            self.inner.insert_usage(scope, events).await
        }
        async fn query_usage(
            &self,
            scope: &TenantScope,
            query: &UsageQuery,
        ) -> berth_store::Result<Vec<berth_store::UsageRow>> {
            self.inner.query_usage(scope, query).await
        }
    }

    #[tokio::test]
    async fn a_poison_row_is_set_aside_and_the_rest_written_after_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&format!("sqlite://{}", dir.path().join("p.db").display()))
                .await
                .unwrap(),
        );
        let a = new_tenant(inner.as_ref(), "poison-a").await;
        let picky = Arc::new(Picky {
            inner: inner.clone(),
            down: 3.into(),
            calls: 0.into(),
        });
        let tasks = TaskTracker::new();
        let rec = UsageRecorder::start(picky.clone(), &tasks, CancellationToken::new());
        let event = |i: usize, model: &str, id: &str| UsageEvent {
            id: id.to_owned(),
            kind: "llm".into(),
            status: "ok".into(),
            model: Some(model.to_owned()),
            cost_nano: 5,
            input_tokens: i64::try_from(i).unwrap(),
            ..Default::default()
        };
        for i in 0..600 {
            let ev = match i {
                // Cleaned and kept: its id is fine, its model has a NUL.
                100 => event(i, "mock/echo\0", "evt_nul_model"),
                // Its id itself is poison: cleaned, it is stored under the cleaned id.
                400 => event(i, "mock/echo", "evt_\0id"),
                _ => event(i, "mock/echo", &format!("evt_{i}")),
            };
            rec.record(&a, ev).await;
        }
        tokio::time::timeout(Duration::from_secs(60), rec.flush())
            .await
            .expect("the recorder neither stalls on the outage nor on the poison rows");
        let rows = inner.query_usage(&a, &UsageQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            (rows[0].requests, rows[0].cost_nano),
            (600, 3000),
            "every row is billed, the poison ones cleaned"
        );
        // The split touched only the halves holding the two rows, not every row one by one.
        let calls = picky.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert!(calls < 120, "{calls} writes");
    }
}
