//! Budget settlements that survive the process: a call's settlement (release its
//! reservation, charge what it cost) is journaled on local disk before the answer ends,
//! then handed to the ledger until the ledger takes it; a settlement a crash (or an outage
//! longer than the process) left unsettled is handed over again at the next start. The
//! ledger settles idempotently by reservation id, so a settlement handed over twice
//! charges once. One the store refuses for what it is (its tenant deleted meanwhile) is set
//! aside with an error and `berth_store_rows_set_aside_total`, never retried for ever.

use crate::budget::{BudgetLedger, Reservation};
use berth_core::{NanoUsd, TenantScope};
use berth_store::journal::Journal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One settlement to hand to the ledger.
#[derive(Serialize, Deserialize)]
struct Pending {
    reservation: Reservation,
    actual: NanoUsd,
}

/// The first wait after a ledger refused a settlement; it doubles up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Without a journal, a settlement is given up (and its amount logged) after this.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);

/// Hands settlements to a [`BudgetLedger`] until it takes them.
pub struct Settler {
    ledger: Arc<dyn BudgetLedger>,
    journal: Option<Arc<Journal<Pending>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Settler {
    /// Settles through `ledger` from memory: a settlement still retrying when the process
    /// dies is lost (the reservation's room comes back when it expires, uncharged).
    pub fn new(
        ledger: Arc<dyn BudgetLedger>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Settler {
            ledger,
            journal: None,
            tasks: tasks.clone(),
            shutdown,
        })
    }

    /// [`Settler::new`] with a journal in `dir` (see [`berth_store::journal`]): the
    /// settlements an earlier process journaled and the ledger never took are handed over
    /// again now, and every settlement is durable once [`Settler::durable`] returns.
    pub fn start_journaled(
        ledger: Arc<dyn BudgetLedger>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        dir: &Path,
    ) -> std::io::Result<Arc<Self>> {
        let (journal, replayed) = Journal::open(dir, "settle")?;
        tasks.spawn(journal.clone().run(shutdown.clone()));
        let me = Arc::new(Settler {
            ledger,
            journal: Some(journal),
            tasks: tasks.clone(),
            shutdown,
        });
        if !replayed.is_empty() {
            tracing::info!(
                settlements = replayed.len(),
                "settling budget reservations journaled before a crash"
            );
        }
        for r in replayed {
            let scope = TenantScope::for_system(r.tenant);
            me.spawn_landing(scope, r.record, Some(r.segment));
        }
        Ok(me)
    }

    /// The ledger reservations are taken from.
    pub fn ledger(&self) -> &Arc<dyn BudgetLedger> {
        &self.ledger
    }

    /// Releases `reservation` and charges `actual`: journaled now, handed to the ledger on
    /// a task of its own. Answers the journal line to wait for ([`Settler::synced`]; `None`:
    /// no journal), so a caller waits for its own settlement's group commit only.
    pub fn settle(
        self: &Arc<Self>,
        scope: &TenantScope,
        reservation: Reservation,
        actual: NanoUsd,
    ) -> Option<u64> {
        let pending = Pending {
            reservation,
            actual,
        };
        let appended = self
            .journal
            .as_ref()
            .map(|j| j.append(scope.tenant(), &pending));
        self.spawn_landing(scope.clone(), pending, appended.map(|(_, segment)| segment));
        appended.map(|(seq, _)| seq)
    }

    /// Waits until the journal line `seq` (from [`Settler::settle`]) is durable.
    pub async fn synced(&self, seq: u64) {
        if let Some(j) = &self.journal {
            j.synced(seq).await;
        }
    }

    /// Waits until every settlement made so far is durable (at once without a journal).
    /// An answer's last bytes wait for this, so a call answered is a call charged.
    pub async fn durable(&self) {
        if let Some(j) = &self.journal {
            j.barrier().await;
        }
    }

    fn spawn_landing(self: &Arc<Self>, scope: TenantScope, pending: Pending, segment: Option<u64>) {
        let me = self.clone();
        self.tasks
            .spawn(async move { me.land(&scope, &pending, segment).await });
    }

    /// Hands `pending` to the ledger until it takes it, backing off; at shutdown a
    /// journaled settlement is left to the next start, an unjournaled one is logged.
    async fn land(&self, scope: &TenantScope, pending: &Pending, segment: Option<u64>) {
        let mut wait = FIRST_WAIT;
        let started = std::time::Instant::now();
        let id = &pending.reservation.id;
        loop {
            match self
                .ledger
                .settle(scope, &pending.reservation, pending.actual)
                .await
            {
                Ok(()) => break,
                // A poison record (its tenant deleted meanwhile, a value the database will
                // not take) is set aside, never retried for ever.
                Err(e) if e.is_refused_row() || e.is_missing_tenant() => {
                    tracing::error!(tenant = %scope.tenant(), hold = %id, error = %e,
                        cost_nano = pending.actual.0, "budget settlement refused by the store; set aside");
                    metrics::counter!("berth_store_rows_set_aside_total", "writer" => "settle")
                        .increment(1);
                    break;
                }
                Err(e) if self.journal.is_none() && started.elapsed() > GIVE_UP_AFTER => {
                    tracing::error!(tenant = %scope.tenant(), hold = %id, error = %e,
                        cost_nano = pending.actual.0, "budget settlement abandoned after an hour");
                    return;
                }
                Err(e) => {
                    tracing::error!(tenant = %scope.tenant(), hold = %id, error = %e,
                        "budget settlement failed; retrying");
                    metrics::counter!("berth_budget_settle_retries_total").increment(1);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.cancelled() => {
                    if self.journal.is_none() {
                        tracing::error!(tenant = %scope.tenant(), hold = %id,
                            cost_nano = pending.actual.0, "budget settlement lost at shutdown");
                    }
                    return;
                }
            }
            wait = (wait * 2).min(MAX_WAIT);
        }
        if let (Some(j), Some(segment)) = (&self.journal, segment) {
            j.stored(&BTreeMap::from([(segment, 1)]));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
    use super::*;
    use crate::budget::Refusal;
    use berth_core::{Id, IdKind, TenantId};
    use berth_meter::budget::ActiveBudget;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A ledger that answers settlements from a script: `down` transient failures first,
    /// then `refuse` (a refused row) or success; it counts attempts and what landed.
    #[derive(Default)]
    struct Scripted {
        down: AtomicUsize,
        refuse: bool,
        attempts: AtomicUsize,
        landed: Mutex<Vec<(String, i64)>>,
    }

    #[async_trait::async_trait]
    impl BudgetLedger for Scripted {
        async fn reserve(
            &self,
            _: &TenantScope,
            _: &[ActiveBudget],
            _: Option<NanoUsd>,
            _: NanoUsd,
        ) -> Result<Reservation, Refusal> {
            unreachable!("settlements only")
        }
        async fn settle(
            &self,
            _: &TenantScope,
            reservation: &Reservation,
            actual: NanoUsd,
        ) -> Result<(), berth_store::StoreError> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self
                .down
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(berth_store::StoreError::Conflict(
                    "the store is down".into(),
                ));
            }
            if self.refuse {
                return Err(berth_store::StoreError::Corrupt("refused".into()));
            }
            self.landed
                .lock()
                .unwrap()
                .push((reservation.id.clone(), actual.0));
            Ok(())
        }
    }

    fn reservation(id: &str) -> Reservation {
        Reservation {
            id: id.to_owned(),
            amount: NanoUsd(1_000),
            budgets: Vec::new(),
        }
    }

    fn scope() -> TenantScope {
        TenantScope::for_system(TenantId::parse(Id::new(IdKind::Tenant).as_str()).unwrap())
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..1000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}");
    }

    #[tokio::test]
    async fn a_settlement_is_retried_until_it_lands_and_then_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let ledger = Arc::new(Scripted {
            down: AtomicUsize::new(3),
            ..Scripted::default()
        });
        let settler =
            Settler::start_journaled(ledger.clone(), &tasks, stop.clone(), dir.path()).unwrap();
        settler.settle(&scope(), reservation("hold_a"), NanoUsd(42));
        settler.durable().await;
        until("landed after three failures", || {
            ledger.landed.lock().unwrap().len() == 1
        })
        .await;
        assert_eq!(ledger.attempts.load(Ordering::SeqCst), 4);
        assert_eq!(ledger.landed.lock().unwrap()[0], ("hold_a".to_owned(), 42));
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test]
    async fn a_settlement_pending_at_shutdown_is_handed_over_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let down = Arc::new(Scripted {
            down: AtomicUsize::new(usize::MAX),
            ..Scripted::default()
        });
        let settler =
            Settler::start_journaled(down.clone(), &tasks, stop.clone(), dir.path()).unwrap();
        settler.settle(&scope(), reservation("hold_b"), NanoUsd(7));
        settler.durable().await;
        until("tried", || down.attempts.load(Ordering::SeqCst) >= 2).await;
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        // The next process: the store is back.
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let up = Arc::new(Scripted::default());
        let _settler =
            Settler::start_journaled(up.clone(), &tasks, stop.clone(), dir.path()).unwrap();
        until("replayed", || up.landed.lock().unwrap().len() == 1).await;
        assert_eq!(up.landed.lock().unwrap()[0], ("hold_b".to_owned(), 7));
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test]
    async fn a_settlement_the_store_refuses_is_set_aside_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let ledger = Arc::new(Scripted {
            refuse: true,
            ..Scripted::default()
        });
        let settler =
            Settler::start_journaled(ledger.clone(), &tasks, stop.clone(), dir.path()).unwrap();
        settler.settle(&scope(), reservation("hold_c"), NanoUsd(1));
        settler.durable().await;
        until("tried", || ledger.attempts.load(Ordering::SeqCst) == 1).await;
        // A retry would come after FIRST_WAIT.
        tokio::time::sleep(FIRST_WAIT * 4).await;
        assert_eq!(ledger.attempts.load(Ordering::SeqCst), 1, "never retried");
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
