//! Fair scheduling of runs across tenants on one node.
//!
//! Every executing run holds a [`Permit`]. A tenant never holds more permits than its
//! concurrency limit, and the node never more than its capacity. Queued runs wait in one
//! queue per tenant and are taken by weighted fair queuing: each tenant has a virtual
//! time that advances by `1 / weight` per run it starts, and the next run comes from the
//! tenant with the smallest virtual time that may start one, so under contention tenants
//! get runs in proportion to their plan's weight, and a tenant with a long queue cannot
//! starve one with a short queue. When the node fills up, admission sheds the lowest tiers
//! first: a tenant of weight `w` is only admitted while fewer than `1 - SHED_MARGIN / w` of
//! the node's capacity execute, so headroom stays for heavier plans.
//!
//! Nobody is shed because of another tenant's backlog: queued runs do not count against
//! admission (only executing ones do), a tenant's queue is bounded by its own length, and
//! the node's queue as a whole refuses only tenants past their fair share of it (by
//! weight, among the tenants with work on the node).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// The share of capacity kept free of weight-1 tenants (less for heavier ones).
pub const SHED_MARGIN: f64 = 0.2;

/// Why a run was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The tenant already runs (or queues) all it may: 429.
    TenantLimit,
    /// The node is too full for this tenant's tier: 503, try again shortly.
    Overloaded,
}

/// What the scheduler knows of a tenant at admission.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    /// Runs it may execute at once.
    pub concurrency: u32,
    /// Its plan's weight (at least 1).
    pub weight: u32,
}

struct TenantState<J> {
    running: u32,
    share: Share,
    vtime: f64,
    queue: VecDeque<J>,
}

struct State<J> {
    running: usize,
    queued: usize,
    tenants: HashMap<String, TenantState<J>>,
    /// The virtual time of the last run started: a tenant that was idle starts from here,
    /// so idling earns no credit to burst past the others later.
    now: f64,
}

/// The scheduler of one node; `J` is what a queued run carries.
pub struct Scheduler<J> {
    capacity: usize,
    /// Queued runs per tenant at most (beyond: `TenantLimit`).
    max_queued: usize,
    state: Mutex<State<J>>,
    wake: Notify,
}

/// A slot of one executing run; dropping it frees the slot.
pub struct Permit<J: Send + 'static> {
    scheduler: Arc<Scheduler<J>>,
    tenant: String,
}

impl<J: Send + 'static> Drop for Permit<J> {
    fn drop(&mut self) {
        {
            let mut s = self.scheduler.lock();
            s.running = s.running.saturating_sub(1);
            if let Some(t) = s.tenants.get_mut(&self.tenant) {
                t.running = t.running.saturating_sub(1);
            }
            self.scheduler.forget_idle(&mut s, &self.tenant);
        }
        self.scheduler.wake.notify_waiters();
    }
}

impl<J: Send + 'static> Scheduler<J> {
    pub fn new(capacity: usize, max_queued: usize) -> Arc<Self> {
        Arc::new(Scheduler {
            capacity: capacity.max(1),
            max_queued: max_queued.max(1),
            state: Mutex::new(State {
                running: 0,
                queued: 0,
                tenants: HashMap::new(),
                now: 0.0,
            }),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget_idle(&self, s: &mut State<J>, tenant: &str) {
        if s.tenants
            .get(tenant)
            .is_some_and(|t| t.running == 0 && t.queue.is_empty())
        {
            s.tenants.remove(tenant);
        }
    }

    /// Below this many runs (executing and queued) the node admits a tenant of `weight`.
    fn admit_below(&self, weight: u32) -> usize {
        let frac = 1.0 - SHED_MARGIN / f64::from(weight.max(1));
        ((self.capacity as f64) * frac).floor().max(1.0) as usize
    }

    /// `of` slots shared by weight among the tenants with work here (`tenant` included,
    /// which must already be in the map): this tenant's part, rounded down.
    fn fair_part(s: &State<J>, weight: u32, of: usize) -> usize {
        let total: u64 = s
            .tenants
            .values()
            .map(|t| u64::from(t.share.weight.max(1)))
            .sum();
        let mine = u64::from(weight.max(1));
        usize::try_from(
            u64::try_from(of).unwrap_or(u64::MAX).saturating_mul(mine) / total.max(mine),
        )
        .unwrap_or(usize::MAX)
    }

    fn tenant<'a>(s: &'a mut State<J>, tenant: &str, share: Share) -> &'a mut TenantState<J> {
        let now = s.now;
        let t = s.tenants.entry(tenant.to_owned()).or_insert(TenantState {
            running: 0,
            share,
            vtime: now,
            queue: VecDeque::new(),
        });
        t.share = share;
        t
    }

    /// Admits a run that starts now (synchronous and streamed runs), or refuses it.
    pub fn admit(self: &Arc<Self>, tenant: &str, share: Share) -> Result<Permit<J>, Refused> {
        let mut s = self.lock();
        let t = Self::tenant(&mut s, tenant, share);
        if t.running >= share.concurrency.max(1) {
            self.forget_idle(&mut s, tenant);
            return Err(Refused::TenantLimit);
        }
        // Executing runs only: another tenant's queue takes no capacity until it runs.
        if s.running >= self.admit_below(share.weight).min(self.capacity) {
            self.forget_idle(&mut s, tenant);
            return Err(Refused::Overloaded);
        }
        let t = Self::tenant(&mut s, tenant, share);
        t.running += 1;
        t.vtime += 1.0 / f64::from(share.weight.max(1));
        s.running += 1;
        Ok(Permit {
            scheduler: self.clone(),
            tenant: tenant.to_owned(),
        })
    }

    /// Whether a new queued run of this tenant would be accepted now (checked before the
    /// run is stored).
    pub fn can_queue(&self, tenant: &str, share: Share) -> Result<(), Refused> {
        let mut s = self.lock();
        let queued = Self::tenant(&mut s, tenant, share).queue.len();
        let verdict = if queued >= self.max_queued {
            Err(Refused::TenantLimit)
        } else {
            // The node's queue may hold several capacities' worth, shed by tier like
            // admission, but only for a tenant past its fair share of it.
            let ceiling = self.admit_below(share.weight) * 4;
            if s.queued >= ceiling && queued >= Self::fair_part(&s, share.weight, ceiling) {
                Err(Refused::Overloaded)
            } else {
                Ok(())
            }
        };
        self.forget_idle(&mut s, tenant);
        verdict
    }

    /// Queues a run (never refused: admission was `can_queue`'s, and runs recovered after
    /// a restart or resumed after an approval must run).
    pub fn enqueue(&self, tenant: &str, share: Share, job: J) {
        {
            let mut s = self.lock();
            Self::tenant(&mut s, tenant, share).queue.push_back(job);
            s.queued += 1;
        }
        self.wake.notify_waiters();
    }

    /// The next queued run by weighted fair queuing, with its permit; waits until one may
    /// start.
    pub async fn next(self: &Arc<Self>) -> (J, Permit<J>) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(got) = self.try_next() {
                return got;
            }
            notified.await;
        }
    }

    fn try_next(self: &Arc<Self>) -> Option<(J, Permit<J>)> {
        let mut s = self.lock();
        if s.running >= self.capacity {
            return None;
        }
        // A tenant's virtual time was set to the node's when it became active (see
        // `tenant`), so a backlogged tenant keeps its place and an idle one earns no credit.
        let pick = s
            .tenants
            .iter()
            .filter(|(_, t)| !t.queue.is_empty() && t.running < t.share.concurrency.max(1))
            .map(|(name, t)| {
                (
                    name.clone(),
                    t.vtime + 1.0 / f64::from(t.share.weight.max(1)),
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        let (name, finish) = pick;
        let st = &mut *s;
        let t = st.tenants.get_mut(&name)?;
        let job = t.queue.pop_front()?;
        t.running += 1;
        t.vtime = finish;
        let start = finish - 1.0 / f64::from(t.share.weight.max(1));
        st.running += 1;
        st.queued -= 1;
        st.now = st.now.max(start);
        drop(s);
        Some((
            job,
            Permit {
                scheduler: self.clone(),
                tenant: name,
            },
        ))
    }

    /// (executing, queued) on this node.
    pub fn load(&self) -> (usize, usize) {
        let s = self.lock();
        (s.running, s.queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREE: Share = Share {
        concurrency: 2,
        weight: 1,
    };
    const PRO: Share = Share {
        concurrency: 50,
        weight: 10,
    };

    #[test]
    fn a_tenant_never_exceeds_its_concurrency() {
        let s = Scheduler::<u32>::new(100, 10);
        let a = s.admit("a", FREE).unwrap();
        let _b = s.admit("a", FREE).unwrap();
        assert_eq!(s.admit("a", FREE).err(), Some(Refused::TenantLimit));
        assert!(s.admit("b", FREE).is_ok(), "another tenant is unaffected");
        drop(a);
        assert!(s.admit("a", FREE).is_ok(), "a freed slot is usable again");
    }

    #[test]
    fn overload_sheds_the_lowest_tier_first() {
        let s = Scheduler::<u32>::new(100, 10);
        let mut held = Vec::new();
        for i in 0..80 {
            held.push(s.admit(&format!("free{i}"), FREE).unwrap());
        }
        // Weight 1 may fill 80% of the node, weight 10 up to 98%.
        assert_eq!(s.admit("free-late", FREE).err(), Some(Refused::Overloaded));
        for _ in 0..18 {
            held.push(s.admit("pro", PRO).unwrap());
        }
        assert_eq!(s.admit("pro", PRO).err(), Some(Refused::Overloaded));
        assert_eq!(s.load(), (98, 0));
    }

    #[tokio::test]
    async fn queued_runs_are_shared_by_weight_not_by_queue_length() {
        let s = Scheduler::<(&str, u32)>::new(1, 10_000);
        let heavy = Share {
            concurrency: 1,
            weight: 3,
        };
        let light = Share {
            concurrency: 1,
            weight: 1,
        };
        // The light tenant queues 1,000 runs first; the heavy one 1,000 after.
        for i in 0..1000 {
            s.enqueue("light", light, ("light", i));
        }
        for i in 0..1000 {
            s.enqueue("heavy", heavy, ("heavy", i));
        }
        let mut served = HashMap::new();
        for _ in 0..400 {
            let (job, permit) = s.next().await;
            *served.entry(job.0).or_insert(0) += 1;
            drop(permit);
        }
        // 3:1 by weight, whatever the order they queued in.
        // (Ties between equal virtual times may go either way: one run of slack.)
        assert!((299..=301).contains(&served["heavy"]), "{served:?}");
        assert_eq!(served["heavy"] + served["light"], 400);
    }

    #[tokio::test]
    async fn next_waits_for_a_free_slot_and_respects_tenant_limits() {
        let s = Scheduler::<u32>::new(4, 100);
        let one = Share {
            concurrency: 1,
            weight: 1,
        };
        s.enqueue("a", one, 1);
        s.enqueue("a", one, 2);
        let (j, p) = s.next().await;
        assert_eq!(j, 1);
        // "a" is at its limit: the second waits until the first permit is dropped.
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.next().await.0 });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(p);
        assert_eq!(waiter.await.unwrap(), 2);
        assert_eq!(s.load(), (0, 0), "every permit was dropped");
    }

    #[test]
    fn queues_are_bounded_per_tenant_and_shed_by_tier() {
        let s = Scheduler::<u32>::new(2, 3);
        for i in 0..3 {
            assert!(s.can_queue("a", FREE).is_ok());
            s.enqueue("a", FREE, i);
        }
        assert_eq!(s.can_queue("a", FREE).err(), Some(Refused::TenantLimit));
        assert!(s.can_queue("b", FREE).is_ok());
    }

    /// Issue 14, item 23: one free tenant's backlog of hundreds of queued runs sheds no
    /// other tenant, of any tier, from a node that is not busy.
    #[tokio::test]
    async fn another_tenants_backlog_sheds_no_one() {
        let s = Scheduler::<u32>::new(10, 1000);
        let wide_free = FREE;
        let mut held = Vec::new();
        // It queues until the node's queue is full for it (a few capacities' worth), and
        // more runs come back queued after a restart.
        let mut queued = 0;
        while s.can_queue("flood", wide_free).is_ok() {
            s.enqueue("flood", wide_free, queued);
            queued += 1;
        }
        assert_eq!(queued, 32);
        for i in queued..400 {
            s.enqueue("flood", wide_free, i);
        }
        for _ in 0..2 {
            held.push(s.next().await.1);
        }
        assert_eq!(s.load(), (2, 398));
        // Another free tenant and a pro one are admitted (and may queue) all the same.
        let b = s
            .admit("other-free", FREE)
            .expect("not shed by the flood's backlog");
        let p = s
            .admit("pro", PRO)
            .expect("not shed by the flood's backlog");
        assert!(s.can_queue("other-free", FREE).is_ok());
        assert!(s.can_queue("pro", PRO).is_ok());
        // The flooding tenant itself is held to its share.
        assert_eq!(
            s.admit("flood", wide_free).err(),
            Some(Refused::TenantLimit)
        );
        assert_eq!(
            s.can_queue("flood", wide_free).err(),
            Some(Refused::Overloaded)
        );
        drop((b, p, held));
    }
}
