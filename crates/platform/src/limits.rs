//! Admission by rate limits: requests per minute of the tenant, of the calling key and of
//! the agent, and tokens per minute of the tenant, each the policy's value capped by the
//! plan's; the decisions the answer reports (as `x-ratelimit-*` headers, named by the
//! HTTP crate); and settling a call's token reservation.
//!
//! Buckets are checked from the narrowest (key, agent) to the widest (tenant requests,
//! then tenant tokens), and a check stops at the first refusal: a refused request counts
//! against the narrower limits it already passed, never against a wider one, so one key
//! hammering its own limit cannot use up its tenant's.
//!
//! Tokens are reserved before the call (the request's estimated input tokens plus its
//! `max_tokens`) and settled after it with what the call really used: a reservation is
//! what makes the limit hold under concurrency and across replicas (answers come later
//! than the next requests), and settling keeps short answers from being charged as long.

use crate::Platform;
use crate::auth::TenantCaller;
use crate::error::{Error, RateReport};
use berth_core::Policy;
use berth_meter::{Decision, RateLimiter};
use berth_runtime::scheduler::Share;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// What a request asks of the limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// The agent the request is for or attributed to (a run's agent, `Berth-Agent`).
    pub agent: Option<&'a str>,
    /// Tokens to reserve against tokens per minute (gateway calls only).
    pub tokens: Option<u64>,
}

/// An admitted request: the decisions to report, and the token reservation to settle.
#[derive(Debug, Default)]
pub struct Admitted {
    report: RateReport,
    reservation: Option<Reservation>,
}

#[derive(Debug, Clone)]
struct Reservation {
    key: String,
    limit: u64,
    tokens: u64,
}

impl Admitted {
    /// What the answer reports of the limits (its `x-ratelimit-*` headers).
    pub fn report(&self) -> RateReport {
        self.report
    }

    /// Replaces the reservation by what the call used (given back when less, taken when
    /// more). Called once; later calls do nothing.
    pub async fn settle(&mut self, limiter: &dyn RateLimiter, used_tokens: u64) {
        let Some(r) = self.reservation.take() else {
            return;
        };
        let delta = i64::try_from(used_tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(r.tokens).unwrap_or(i64::MAX));
        if delta != 0 {
            limiter.settle(&r.key, r.limit, MINUTE, delta).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Requests,
    Tokens,
}

/// One bucket to check: its key (always naming the tenant), limit and cost, and how a
/// refusal is reported.
struct Bucket {
    key: String,
    limit: u64,
    cost: u64,
    code: &'static str,
    what: &'static str,
    unit: Unit,
}

/// Checks every limit that applies to this request, narrowest first. Returns the decisions
/// to report (and the reservation to settle), or the refusal.
pub async fn admit(
    state: &Platform,
    auth: &TenantCaller,
    policy: &Policy,
    ask: Ask<'_>,
) -> Result<Admitted, Error> {
    let tenant = &auth.tenant;
    // Config validation guarantees the default plan exists; a tenant whose plan was since
    // removed from the config is held to the default plan's limits.
    let Some(plan) = state
        .settings
        .plans
        .get(&tenant.plan)
        .or_else(|| state.settings.plans.get(&state.settings.default_plan))
    else {
        return Ok(Admitted::default());
    };
    let limits = policy.effective_limits(plan);
    let mut buckets = Vec::with_capacity(4);
    if let (Some(limit), Some(key)) = (limits.per_key_requests_per_minute, &auth.key) {
        buckets.push(Bucket {
            key: format!("rpm:{}:key:{}", tenant.id, key.id),
            limit: u64::from(limit),
            cost: 1,
            code: "key_requests_per_minute",
            what: "this key",
            unit: Unit::Requests,
        });
    }
    if let (Some(limit), Some(agent)) = (limits.per_agent_requests_per_minute, ask.agent) {
        buckets.push(Bucket {
            key: format!("rpm:{}:agent:{agent}", tenant.id),
            limit: u64::from(limit),
            cost: 1,
            code: "agent_requests_per_minute",
            what: "this agent",
            unit: Unit::Requests,
        });
    }
    buckets.push(Bucket {
        key: format!("rpm:{}", tenant.id),
        limit: u64::from(
            limits
                .requests_per_minute
                .unwrap_or(plan.requests_per_minute),
        ),
        cost: 1,
        code: "requests_per_minute",
        what: "this tenant",
        unit: Unit::Requests,
    });
    if let Some(tokens) = ask.tokens {
        let limit = limits.tokens_per_minute.unwrap_or(plan.tokens_per_minute);
        buckets.push(Bucket {
            key: format!("tpm:{}", tenant.id),
            limit,
            // A request larger than a whole minute's tokens would never fit: it waits
            // for a full bucket and takes all of it instead.
            cost: tokens.clamp(1, limit.max(1)),
            code: "tokens_per_minute",
            what: "this tenant",
            unit: Unit::Tokens,
        });
    }
    // The requests headers describe the tightest request bucket: the one a client must
    // pace itself by.
    let mut tightest: Option<Decision> = None;
    let mut admitted = Admitted::default();
    for b in buckets {
        let d = state.limiter.check(&b.key, b.limit, MINUTE, b.cost).await;
        match b.unit {
            Unit::Tokens => admitted.report.tokens = Some(d),
            Unit::Requests => {
                if !d.allowed || tightest.is_none_or(|t| d.remaining < t.remaining) {
                    tightest = Some(d);
                }
            }
        }
        if !d.allowed {
            admitted.report.requests = tightest;
            return Err(refusal(&b, &d, admitted.report));
        }
        if b.unit == Unit::Tokens {
            admitted.reservation = Some(Reservation {
                key: b.key,
                limit: b.limit,
                tokens: b.cost,
            });
        }
    }
    admitted.report.requests = tightest;
    Ok(admitted)
}

fn refusal(b: &Bucket, d: &Decision, report: RateReport) -> Error {
    let message = match b.unit {
        Unit::Tokens => format!(
            "{} may use {} tokens per minute; this request reserves {} and {} are left; retry in {:.1}s",
            b.what,
            d.limit,
            b.cost,
            d.remaining,
            d.retry_after.as_secs_f64()
        ),
        Unit::Requests => format!(
            "{} may make {} requests per minute; retry in {:.1}s",
            b.what,
            d.limit,
            d.retry_after.as_secs_f64()
        ),
    };
    let mut err = Error::rate_limited(message);
    err.code = b.code;
    err.retry_after_secs = Some(d.retry_after.as_secs_f64().ceil().max(1.0) as u64);
    err.rate = Some(Box::new(report));
    err
}

/// The tenant's share of the node: its concurrency limit (the policy's, capped by the
/// plan's) and its plan's weight.
pub fn share_of(state: &Platform, plan: &str, policy: &Policy) -> Share {
    match crate::budgets::plan_of(state, plan) {
        Some(p) => Share {
            concurrency: policy
                .effective_limits(p)
                .concurrent_runs
                .unwrap_or(p.concurrent_runs),
            weight: p.weight,
        },
        None => Share {
            concurrency: 1,
            weight: 1,
        },
    }
}
