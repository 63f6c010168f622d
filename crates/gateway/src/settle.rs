//! Budget settlements that survive the process: a call's settlement (release its
//! reservation, charge what it cost) is journaled on local disk before the answer ends,
//! then handed to the ledger until the ledger takes it; a settlement a crash (or an outage
//! longer than the process) left unsettled is handed over again at the next start. The
//! ledger settles idempotently by reservation id, so a settlement handed over twice
//! charges once.

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

    /// Releases `reservation` and charges `actual`: journaled now (durable by the next
    /// group commit, see [`Settler::durable`]), handed to the ledger on a task of its own.
    pub fn settle(
        self: &Arc<Self>,
        scope: &TenantScope,
        reservation: Reservation,
        actual: NanoUsd,
    ) {
        let pending = Pending {
            reservation,
            actual,
        };
        let segment = self
            .journal
            .as_ref()
            .map(|j| j.append(scope.tenant(), &pending).1);
        self.spawn_landing(scope.clone(), pending, segment);
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
