//! Runs the limiter contract against memory and Redis, checks that two Redis limiters (two
//! processes) enforce one limit, and that a Redis outage falls back to per-node memory and
//! recovers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_meter::contract::{self, redis_test_url, unique_prefix};
use berth_meter::{MemoryLimiter, RateLimiter, RedisLimiter, RedisOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

async fn redis(url: &str, prefix: &str) -> RedisLimiter {
    let options = RedisOptions {
        prefix: prefix.to_owned(),
        ..RedisOptions::default()
    };
    RedisLimiter::connect(url, options).await.unwrap()
}

#[tokio::test]
async fn memory_passes_the_contract() {
    let l = MemoryLimiter::default();
    assert_eq!(l.backend(), "memory");
    contract::run_all(&l).await;
}

#[tokio::test]
async fn redis_passes_the_contract() {
    let Some(url) = redis_test_url().await else {
        return;
    };
    let l = redis(&url, &unique_prefix()).await;
    assert_eq!(l.backend(), "redis");
    contract::run_all(&l).await;
}

#[tokio::test]
async fn two_redis_limiters_enforce_one_limit() {
    let Some(url) = redis_test_url().await else {
        return;
    };
    let prefix = unique_prefix();
    let (a, b) = (redis(&url, &prefix).await, redis(&url, &prefix).await);
    contract::one_limit_across_instances(&a, &b).await;
    // Two memory limiters, by contrast, are two limits: the reason Redis exists here.
    let (a, b) = (MemoryLimiter::default(), MemoryLimiter::default());
    let mut allowed = 0;
    for _ in 0..50 {
        for l in [&a, &b] {
            allowed += u32::from(l.check("k", 50, Duration::from_secs(60), 1).await.allowed);
        }
    }
    assert_eq!(allowed, 100);
}

#[tokio::test]
async fn redis_keys_carry_the_prefix_and_expire() {
    let Some(url) = redis_test_url().await else {
        return;
    };
    let prefix = unique_prefix();
    let l = redis(&url, &prefix).await;
    l.check("ten_1:rpm", 10, Duration::from_secs(60), 1).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:rl:ten_1:rpm"))
        .query_async(&mut conn)
        .await
        .unwrap();
    // One unit of a 10/min limit is owed: the key lives as long as the debt, 6 s.
    assert!((5_000..=6_000).contains(&ttl), "{ttl}");
}

/// A TCP proxy in front of Redis that the test can cut and restore, standing for a Redis
/// outage (connections reset, then refused).
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    target: String,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = Proxy {
            addr: listener.local_addr().unwrap(),
            up: Arc::new(AtomicBool::new(true)),
            task: None,
            target: target.to_owned(),
        };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, up) = (self.target.clone(), self.up.clone());
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let up = up.clone();
                conns.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    if up.load(Ordering::SeqCst) {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Cuts every connection and stops listening.
    fn cut(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            // Aborting drops the listener and the `JoinSet`, which aborts every connection.
            t.abort();
        }
    }

    async fn restore(&mut self) {
        self.up.store(true, Ordering::SeqCst);
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test]
async fn a_redis_outage_falls_back_to_memory_and_recovers() {
    let Some(url) = redis_test_url().await else {
        return;
    };
    let target = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut proxy = Proxy::start(&target).await;
    let prefix = unique_prefix();
    let options = RedisOptions {
        prefix: prefix.clone(),
        timeout: Duration::from_millis(200),
        pause_after_failure: Duration::from_millis(300),
    };
    let through_proxy = RedisLimiter::connect(&format!("redis://{}", proxy.addr), options)
        .await
        .unwrap();
    let direct = redis(&url, &prefix).await;
    let minute = Duration::from_secs(60);
    // Shared while Redis answers: the other limiter sees the unit taken.
    assert_eq!(through_proxy.check("k", 5, minute, 1).await.remaining, 4);
    assert_eq!(direct.check("k", 5, minute, 1).await.remaining, 3);

    proxy.cut();
    // Open to memory: decisions keep coming, quickly, and still hold this node to the
    // limit (a fresh local bucket of 5).
    let started = Instant::now();
    let mut allowed = 0;
    for _ in 0..8 {
        allowed += u32::from(through_proxy.check("k", 5, minute, 1).await.allowed);
    }
    assert_eq!(allowed, 5, "the local fallback enforces the limit");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "one timeout at most, not one per check: {:?}",
        started.elapsed()
    );
    // The breaker: the first failure opened it, the other checks did not try Redis.
    let failures = through_proxy.failures();
    assert!(
        (1..=3).contains(&failures),
        "{failures} failed calls for 8 checks"
    );
    // Redis itself did not see those.
    assert_eq!(direct.check("k", 5, minute, 1).await.remaining, 2);

    proxy.restore().await;
    // After the pause a probe finds Redis again and decisions are shared once more.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = through_proxy.check("probe", 100, minute, 1).await;
        let seen = direct.check("probe", 100, minute, 0).await;
        if d.allowed && seen.remaining < 100 {
            break;
        }
        assert!(Instant::now() < deadline, "Redis never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(through_proxy.check("k", 5, minute, 1).await.remaining, 1);
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_an_error() {
    // Port 1 on loopback: refused at once.
    let r = RedisLimiter::connect(
        "redis://127.0.0.1:1",
        RedisOptions {
            timeout: Duration::from_millis(200),
            ..RedisOptions::default()
        },
    )
    .await;
    assert!(r.is_err());
    assert!(
        RedisLimiter::connect("http://nope", RedisOptions::default())
            .await
            .is_err()
    );
}
