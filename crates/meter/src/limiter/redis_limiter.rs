//! The Redis GCRA limiter: limits shared by every Berth process pointed at one Redis.
//!
//! Each decision is one atomic Lua script (sent by `EVALSHA`, by `EVAL` when the server has
//! lost its script cache) that reads the key's TAT, decides and writes it back, so two
//! processes racing on one key cannot both take the last unit. Time is Redis's own
//! (`redis.call('TIME')`), so replicas whose clocks disagree still agree on every bucket.
//! A key expires when its TAT has passed (at most about one window after its last use).
//!
//! When Redis does not answer, the limiter fails *open to this node's memory*: the same
//! check is decided by a [`MemoryLimiter`] (each node then enforces the whole limit alone),
//! with a warning and a metric; after a failure Redis is skipped for a pause, then one
//! check probes it. Why not closed: an outage of the limit store would refuse every
//! request of every tenant; spending stays capped anyway by the budgets, which live in the
//! database, not in Redis.

use super::{Decision, Gcra, MemoryLimiter, RateLimiter};
use redis::aio::ConnectionManager;
use redis::{ErrorKind, FromRedisValue, RedisResult, ServerErrorKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Keys: `KEYS[1]`, the bucket, holding its TAT as `seconds:nanoseconds` of Redis's clock
/// (two numbers, because Lua's doubles hold integers exactly only up to 2^53 and
/// nanoseconds since 1970 are beyond that; the debt itself, under a window, is not).
/// `ARGV`: `T` (ns per unit), `W` (the window, ns), the cost. Returns `{allowed, debt}`;
/// the caller computes every other number from the debt, with the same code as in memory.
const CHECK: &str = r"
local t = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local now = redis.call('TIME')
local now_s = tonumber(now[1])
local now_ns = tonumber(now[2]) * 1000
local debt = 0
local tat = redis.call('GET', KEYS[1])
if tat then
  local s, ns = string.match(tat, '^(%d+):(%d+)$')
  if s then
    debt = (tonumber(s) - now_s) * 1000000000 + (tonumber(ns) - now_ns)
    if debt < 0 then debt = 0 end
  end
end
local after = debt + n * t
if after > w then
  return {0, debt}
end
if n > 0 then
  local at = now_ns + after
  redis.call('SET', KEYS[1],
    string.format('%d:%d', now_s + math.floor(at / 1000000000), at % 1000000000),
    'PX', math.ceil(after / 1000000))
end
return {1, debt}
";

/// Settles a reservation: `ARGV`: `T`, the change in units (negative gives back). The debt
/// never goes below zero (an empty bucket); at zero the key is deleted.
const SETTLE: &str = r"
local t = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local now = redis.call('TIME')
local now_s = tonumber(now[1])
local now_ns = tonumber(now[2]) * 1000
local debt = 0
local tat = redis.call('GET', KEYS[1])
if tat then
  local s, ns = string.match(tat, '^(%d+):(%d+)$')
  if s then
    debt = (tonumber(s) - now_s) * 1000000000 + (tonumber(ns) - now_ns)
    if debt < 0 then debt = 0 end
  end
end
local after = debt + delta * t
if after <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local at = now_ns + after
redis.call('SET', KEYS[1],
  string.format('%d:%d', now_s + math.floor(at / 1000000000), at % 1000000000),
  'PX', math.ceil(after / 1000000))
return 1
";

/// A script and its SHA-1, which `EVALSHA` names it by.
struct Lua {
    source: String,
    sha: String,
}

impl Lua {
    fn new(source: &str) -> Self {
        Lua {
            sha: redis::Script::new(source).get_hash().to_owned(),
            source: source.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prepended to every key (`<prefix>:rl:<key>`), so several deployments (or tests) can
    /// share one Redis.
    pub prefix: String,
    /// How long a decision waits for Redis before this node's memory decides.
    pub timeout: Duration,
    /// After a failure, how long Redis is left alone before one check probes it.
    pub pause_after_failure: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "berth".to_owned(),
            timeout: Duration::from_millis(250),
            pause_after_failure: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisLimiterError {
    #[error("not a Redis URL: {0}")]
    Url(redis::RedisError),
    #[error("cannot reach Redis: {0}")]
    Connect(redis::RedisError),
}

pub struct RedisLimiter {
    conn: ConnectionManager,
    options: RedisOptions,
    check: Lua,
    settle: Lua,
    fallback: MemoryLimiter,
    breaker: Breaker,
    failures: AtomicU64,
}

impl RedisLimiter {
    /// Calls to Redis that failed or timed out since this limiter was made (each decided
    /// by the fallback instead).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Connects to `url` (failing if Redis does not answer now: a wrong address should stop
    /// a deploy, not degrade it silently); later outages fall back to memory.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, RedisLimiterError> {
        let client = redis::Client::open(url).map_err(RedisLimiterError::Url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(2)
            .set_max_delay(options.pause_after_failure);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(RedisLimiterError::Connect)?;
        Ok(Self::with_scripts(conn, options, CHECK, SETTLE))
    }

    fn with_scripts(
        conn: ConnectionManager,
        options: RedisOptions,
        check: &str,
        settle: &str,
    ) -> Self {
        RedisLimiter {
            conn,
            breaker: Breaker::new(options.pause_after_failure),
            options,
            check: Lua::new(check),
            settle: Lua::new(settle),
            fallback: MemoryLimiter::default(),
            failures: AtomicU64::new(0),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:rl:{key}", self.options.prefix)
    }

    /// Runs `script` on one key: `EVALSHA`, or `EVAL` when the server does not know it (a
    /// restart, a failover or `SCRIPT FLUSH` emptied its cache; `EVAL` caches it again).
    async fn eval<T: FromRedisValue>(
        &self,
        script: &Lua,
        key: &str,
        args: &[i64],
    ) -> RedisResult<T> {
        let mut conn = self.conn.clone();
        let first = redis::cmd("EVALSHA")
            .arg(&script.sha)
            .arg(1)
            .arg(key)
            .arg(args)
            .query_async(&mut conn)
            .await;
        match first {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                redis::cmd("EVAL")
                    .arg(&script.source)
                    .arg(1)
                    .arg(key)
                    .arg(args)
                    .query_async(&mut conn)
                    .await
            }
            other => other,
        }
    }

    /// Runs `script` within the timeout, or says why not (and opens the breaker).
    async fn run<T: FromRedisValue>(&self, script: &Lua, key: &str, args: &[i64]) -> Option<T> {
        if !self.breaker.may_try() {
            metrics::counter!("berth_ratelimit_fallback_decisions_total").increment(1);
            return None;
        }
        let error = match tokio::time::timeout(
            self.options.timeout,
            self.eval(script, &self.key(key), args),
        )
        .await
        {
            Ok(Ok(v)) => {
                if self.breaker.succeeded() {
                    tracing::info!(
                        "Redis answers again; rate limits are shared across nodes again"
                    );
                }
                return Some(v);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.options.timeout),
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("berth_ratelimit_redis_failures_total").increment(1);
        metrics::counter!("berth_ratelimit_fallback_decisions_total").increment(1);
        if self.breaker.failed() {
            tracing::warn!(error = %error, "Redis unreachable; rate limits are enforced per node, in memory, until it answers");
        }
        None
    }
}

fn ns(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, limit: u64, window: Duration, cost: u64) -> Decision {
        let g = Gcra::new(limit, window);
        let args = [ns(g.t), ns(g.w), i64::try_from(cost).unwrap_or(i64::MAX)];
        match self.run::<(i64, i64)>(&self.check, key, &args).await {
            Some((allowed, debt)) => g.decision(i128::from(debt), cost, allowed == 1),
            None => self.fallback.check_now(key, limit, window, cost),
        }
    }

    async fn settle(&self, key: &str, limit: u64, window: Duration, delta: i64) {
        let g = Gcra::new(limit, window);
        if self
            .run::<i64>(&self.settle, key, &[ns(g.t), delta])
            .await
            .is_none()
        {
            self.fallback.settle_now(key, limit, window, delta);
        }
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

/// Closed (0), or open until a time (ms since `origin`, plus one so it is never 0). When
/// the time has come, the one caller that moves it forward probes; the others keep
/// deciding locally, so an outage costs one timeout per pause, not one per request.
struct Breaker {
    origin: Instant,
    pause: Duration,
    open_until: AtomicU64,
}

impl Breaker {
    fn new(pause: Duration) -> Self {
        Breaker {
            origin: Instant::now(),
            pause,
            open_until: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    fn may_try(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + self.pause.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Closes the breaker; true if it was open.
    fn succeeded(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
            && self.open_until.swap(0, Ordering::AcqRel) != 0
    }

    /// Opens it for a pause; true if it was closed.
    fn failed(&self) -> bool {
        let until = self.now_ms() + self.pause.as_millis() as u64;
        self.open_until.swap(until, Ordering::AcqRel) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_lets_one_probe_through_per_pause() {
        let b = Breaker::new(Duration::from_millis(50));
        assert!(b.may_try() && b.may_try());
        assert!(b.failed());
        assert!(!b.failed(), "already open");
        assert!(!b.may_try());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.may_try(), "the probe");
        assert!(!b.may_try(), "only one");
        assert!(b.succeeded());
        assert!(!b.succeeded());
        assert!(b.may_try());
    }

    /// A script Redis has never seen (its source differs by a comment) is sent by `EVAL`
    /// after `EVALSHA` fails with `NOSCRIPT`; the next call finds it cached.
    #[tokio::test]
    async fn an_unknown_script_is_sent_with_eval() {
        let Some(url) = crate::contract::redis_test_url().await else {
            return;
        };
        let client = redis::Client::open(url.as_str()).unwrap();
        let conn = ConnectionManager::new(client).await.unwrap();
        let tag = crate::contract::unique_prefix();
        let check = format!("-- {tag}\n{CHECK}");
        let options = RedisOptions {
            prefix: tag.clone(),
            ..RedisOptions::default()
        };
        let l = RedisLimiter::with_scripts(conn.clone(), options, &check, SETTLE);
        let exists: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&l.check.sha)
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        assert_eq!(exists, vec![0]);
        let minute = Duration::from_secs(60);
        assert!(l.check("k", 2, minute, 1).await.allowed);
        let exists: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&l.check.sha)
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        assert_eq!(exists, vec![1]);
        assert_eq!(l.check("k", 2, minute, 1).await.remaining, 0);
        assert!(!l.check("k", 2, minute, 1).await.allowed);
        // Decided by Redis, not by the fallback.
        assert_eq!(l.failures(), 0);
    }
}
