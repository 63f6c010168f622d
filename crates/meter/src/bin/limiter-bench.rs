//! `limiter-bench`: decisions per second and latency of the in-memory and the Redis GCRA
//! limiters, printed as a markdown table (run by `bench/metering/limiter`).
//!
//! Memory: a fixed number of decisions per thread, through the `RateLimiter` trait as the
//! API calls it (and once by the direct call, to show what the trait's boxed future
//! costs), on 10,000 keys or on one hot key. Redis: `N` concurrent callers sharing one
//! limiter (one multiplexed connection, as a server does) for a fixed time, each timing
//! every decision. Limits are high enough that every decision is allowed, so each one
//! also writes its key (the dearer path).

use berth_meter::{MemoryLimiter, RateLimiter, RedisLimiter, RedisOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

const MINUTE: Duration = Duration::from_secs(60);
/// So high that nothing is refused: 10^12 a minute.
const LIMIT: u64 = 1_000_000_000_000;

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("rpm:ten_bench{i:08}")).collect()
}

struct Row {
    backend: &'static str,
    how: String,
    keys: &'static str,
    decisions: u64,
    elapsed: Duration,
    /// Time one decision takes for its caller (thread or task), mean.
    ns_per_decision: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

impl Row {
    fn print(&self) {
        let per_sec = self.decisions as f64 / self.elapsed.as_secs_f64();
        let ns = self.ns_per_decision;
        let pct = |v: Option<f64>| v.map_or("".to_owned(), |v| format!("{v:.1}"));
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} |",
            self.backend,
            self.how,
            self.keys,
            per_sec,
            ns,
            pct(self.p50_us),
            pct(self.p99_us)
        );
    }
}

/// `threads` OS threads, each making `per_thread` decisions on `keys` (round robin).
fn memory(
    limiter: &Arc<MemoryLimiter>,
    threads: usize,
    per_thread: usize,
    keys: &Arc<Vec<String>>,
    through_trait: bool,
) -> Result<Duration, Error> {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (l, keys) = (limiter.clone(), keys.clone());
            std::thread::spawn(move || -> Result<u64, Error> {
                let key = |i: usize| &keys[(i + t * 7919) % keys.len()];
                if !through_trait {
                    return Ok((0..per_thread)
                        .map(|i| u64::from(l.check_now(key(i), LIMIT, MINUTE, 1).allowed))
                        .sum());
                }
                // One task awaiting decision after decision, as a request handler does.
                let rt = tokio::runtime::Builder::new_current_thread().build()?;
                let limiter: &dyn RateLimiter = l.as_ref();
                Ok(rt.block_on(async {
                    let mut allowed = 0u64;
                    for i in 0..per_thread {
                        allowed += u64::from(limiter.check(key(i), LIMIT, MINUTE, 1).await.allowed);
                    }
                    allowed
                }))
            })
        })
        .collect();
    let mut allowed = 0;
    for h in handles {
        allowed += h.join().map_err(|_| "a bench thread panicked")??;
    }
    let elapsed = start.elapsed();
    if allowed != (threads * per_thread) as u64 {
        return Err("a decision was refused; the limit is meant to allow all".into());
    }
    Ok(elapsed)
}

/// What one Redis decision is timed by: the limiter, or a bare `PING` on a connection of
/// its own (the round trip every decision pays, as a baseline).
#[derive(Clone)]
enum Target {
    Limiter(Arc<RedisLimiter>),
    Ping(redis::aio::ConnectionManager),
}

async fn redis(
    target: Target,
    callers: usize,
    duration: Duration,
    keys: Arc<Vec<String>>,
) -> Result<Row, Error> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let (target, keys) = (target.clone(), keys.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut i = c * 7919;
            while Instant::now() < deadline {
                let key = &keys[i % keys.len()];
                i += 1;
                let t = Instant::now();
                let ok = match &target {
                    Target::Limiter(l) => l.check(key, LIMIT, MINUTE, 1).await.allowed,
                    Target::Ping(conn) => redis::cmd("PING")
                        .query_async::<String>(&mut conn.clone())
                        .await
                        .is_ok(),
                };
                latencies.push(t.elapsed().as_nanos() as u64);
                if !ok {
                    return Err("refused or failed: every decision is meant to be allowed");
                }
            }
            Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    let elapsed = start.elapsed();
    let mean = all.iter().sum::<u64>() as f64 / all.len().max(1) as f64;
    all.sort_unstable();
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1));
        all.get(i).map(|ns| *ns as f64 / 1000.0)
    };
    let (backend, keys) = match target {
        Target::Limiter(_) => ("redis", "10,000"),
        Target::Ping(_) => ("redis PING (baseline)", "-"),
    };
    Ok(Row {
        backend,
        how: format!(
            "{callers} concurrent caller{}",
            if callers == 1 { "" } else { "s" }
        ),
        keys,
        decisions: all.len() as u64,
        elapsed,
        ns_per_decision: mean,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

fn main() -> Result<(), Error> {
    let per_thread: usize = std::env::var("DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let callers: Vec<usize> = std::env::var("CALLERS")
        .unwrap_or_else(|_| "1,8,32,64".to_owned())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    // `memory`, `redis` or both (the script runs them apart, pinned differently).
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "memory redis".to_owned());
    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|_| parts.contains("redis"));
    let header = std::env::var("NO_HEADER").is_err();

    if header {
        println!(
            "| backend | how | keys | decisions/s | ns per decision (per caller, mean) | p50 µs | p99 µs |\n|---|---|---|---:|---:|---:|---:|"
        );
    }
    let many = Arc::new(keys(10_000));
    let hot = Arc::new(keys(1));
    let memory_rows = [
        (1, &many, "10,000", false),
        (1, &many, "10,000", true),
        (1, &hot, "1 (hot)", true),
        (2, &many, "10,000", true),
        (2, &hot, "1 (hot)", true),
    ];
    let memory_rows = if parts.contains("memory") {
        &memory_rows[..]
    } else {
        &[]
    };
    for &(threads, keys, label, through_trait) in memory_rows {
        let limiter = Arc::new(MemoryLimiter::default());
        // Warm up: every key present, caches and allocator settled.
        memory(&limiter, 1, keys.len().max(100_000), keys, true)?;
        let elapsed = memory(&limiter, threads, per_thread, keys, through_trait)?;
        Row {
            backend: "memory",
            how: format!(
                "{threads} thread{}, {}",
                if threads == 1 { "" } else { "s" },
                if through_trait {
                    "trait (async)"
                } else {
                    "direct call"
                }
            ),
            keys: label,
            decisions: (threads * per_thread) as u64,
            elapsed,
            ns_per_decision: elapsed.as_nanos() as f64 / per_thread as f64,
            p50_us: None,
            p99_us: None,
        }
        .print();
    }
    if let Some(url) = redis_url {
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async {
            let prefix = format!(
                "berth-bench-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            );
            let options = RedisOptions {
                prefix,
                ..RedisOptions::default()
            };
            let limiter = Arc::new(RedisLimiter::connect(&url, options).await?);
            let ping =
                redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await?;
            let duration = Duration::from_secs(seconds);
            // Warm up: the script cached on the server, the connection open.
            let warm = Duration::from_millis(500);
            redis(Target::Limiter(limiter.clone()), 4, warm, many.clone()).await?;
            for &c in &callers {
                redis(Target::Ping(ping.clone()), c, duration, many.clone())
                    .await?
                    .print();
                redis(Target::Limiter(limiter.clone()), c, duration, many.clone())
                    .await?
                    .print();
            }
            // A failed call is decided in memory: numbers with any are not Redis's.
            if limiter.failures() > 0 {
                return Err(format!("{} Redis calls failed", limiter.failures()).into());
            }
            Ok::<_, Error>(())
        })?;
    }
    Ok(())
}
