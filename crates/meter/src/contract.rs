//! The limiter contract: one suite every [`RateLimiter`] backend must pass, plus the Redis
//! that tests use.
//!
//! Compiled only with the `contract` feature, which tests enable; it panics on failure
//! like any test code. Time is real (Redis's clock cannot be faked), so the checks use
//! windows whose emission interval is far longer than a few round trips, and allow for
//! the milliseconds that pass between calls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::RateLimiter;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// Where tests find Redis: `BERTH_TEST_REDIS_URL`, else the local server; `None` when it
/// does not answer. Under `CI=true` an unreachable Redis fails the test instead.
pub async fn redis_test_url() -> Option<String> {
    let url = std::env::var("BERTH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => Some(url),
        failure => {
            let why = match failure {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 2s".to_owned(),
            };
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("Redis at {url} is required under CI=true: {why}");
            }
            eprintln!("skipping Redis test: {url} unreachable: {why}");
            None
        }
    }
}

/// A key prefix no other test uses, so tests running at once on one Redis never share a
/// bucket.
pub fn unique_prefix() -> String {
    format!("berth-test-{:016x}", rand::random::<u64>())
}

fn near(actual: Duration, expected: Duration, what: &str) {
    // Up to 2 s early (time passed between calls on a loaded machine), never late.
    assert!(
        actual <= expected && actual + Duration::from_secs(2) >= expected,
        "{what}: {actual:?}, expected about {expected:?}"
    );
}

/// Every property of the contract, on keys of their own.
pub async fn run_all(l: &dyn RateLimiter) {
    a_burst_of_limit_then_refusal(l).await;
    units_come_back_after_t(l).await;
    costs_above_one(l).await;
    keys_are_independent(l).await;
    a_changed_limit_keeps_the_share_used(l).await;
    settlements(l).await;
}

pub async fn a_burst_of_limit_then_refusal(l: &dyn RateLimiter) {
    for i in 0..10u64 {
        let d = l.check("contract:burst", 10, MINUTE, 1).await;
        assert!(d.allowed, "request {i}");
        assert_eq!((d.limit, d.remaining), (10, 9 - i), "request {i}");
        assert_eq!(d.retry_after, Duration::ZERO);
        near(d.reset, Duration::from_secs(6 * (i + 1)), "reset");
    }
    let refused = l.check("contract:burst", 10, MINUTE, 1).await;
    assert!(!refused.allowed);
    assert_eq!((refused.limit, refused.remaining), (10, 0));
    near(refused.retry_after, Duration::from_secs(6), "retry_after");
    near(refused.reset, MINUTE, "reset when refused");
}

pub async fn units_come_back_after_t(l: &dyn RateLimiter) {
    // Two per 400 ms: one unit every 200 ms.
    let window = Duration::from_millis(400);
    assert!(l.check("contract:refill", 2, window, 1).await.allowed);
    assert!(l.check("contract:refill", 2, window, 1).await.allowed);
    let refused = l.check("contract:refill", 2, window, 1).await;
    assert!(!refused.allowed);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(200),
        "{:?}",
        refused.retry_after
    );
    tokio::time::sleep(refused.retry_after + Duration::from_millis(20)).await;
    assert!(l.check("contract:refill", 2, window, 1).await.allowed);
}

pub async fn costs_above_one(l: &dyn RateLimiter) {
    // 100 units a minute: 600 ms each.
    let d = l.check("contract:cost", 100, MINUTE, 60).await;
    assert_eq!((d.allowed, d.remaining), (true, 40));
    near(d.reset, Duration::from_secs(36), "reset after 60 units");
    // 50 do not fit in 40; the refusal takes nothing and says when 10 more are back.
    let refused = l.check("contract:cost", 100, MINUTE, 50).await;
    assert_eq!((refused.allowed, refused.remaining), (false, 40));
    near(
        refused.retry_after,
        Duration::from_secs(6),
        "retry_after for 10 units",
    );
    let d = l.check("contract:cost", 100, MINUTE, 40).await;
    assert_eq!((d.allowed, d.remaining), (true, 0));
    // More than the limit never fits, even in an empty bucket.
    let d = l.check("contract:too-big", 100, MINUTE, 101).await;
    assert!(!d.allowed && d.retry_after > Duration::ZERO);
    assert_eq!(d.remaining, 100);
}

pub async fn keys_are_independent(l: &dyn RateLimiter) {
    for _ in 0..3 {
        assert!(l.check("contract:key-a", 3, MINUTE, 1).await.allowed);
    }
    assert!(!l.check("contract:key-a", 3, MINUTE, 1).await.allowed);
    let d = l.check("contract:key-b", 3, MINUTE, 1).await;
    assert_eq!((d.allowed, d.remaining), (true, 2));
}

/// A new limit applies at once to the time already owed: half a window used at 10/min
/// leaves half of a new limit, 10 of 20 or 2 of 4.
pub async fn a_changed_limit_keeps_the_share_used(l: &dyn RateLimiter) {
    for (key, new_limit, left) in [("contract:raise", 20, 10), ("contract:lower", 4, 2)] {
        for _ in 0..5 {
            assert!(l.check(key, 10, MINUTE, 1).await.allowed);
        }
        for i in 0..left {
            let d = l.check(key, new_limit, MINUTE, 1).await;
            assert!(d.allowed, "{key}: {i} of {left}");
            assert_eq!((d.limit, d.remaining), (new_limit, left - 1 - i), "{key}");
        }
        assert!(!l.check(key, new_limit, MINUTE, 1).await.allowed, "{key}");
    }
}

pub async fn settlements(l: &dyn RateLimiter) {
    // 1,000 tokens a minute (60 ms each): reserve 900, then the call used 50.
    let d = l.check("contract:settle", 1000, MINUTE, 900).await;
    assert_eq!((d.allowed, d.remaining), (true, 100));
    assert!(!l.check("contract:settle", 1000, MINUTE, 200).await.allowed);
    l.settle("contract:settle", 1000, MINUTE, -850).await;
    let d = l.check("contract:settle", 1000, MINUTE, 200).await;
    assert_eq!((d.allowed, d.remaining), (true, 750));
    // Using more than reserved is taken without a check, into debt.
    l.settle("contract:settle", 1000, MINUTE, 2000).await;
    let d = l.check("contract:settle", 1000, MINUTE, 1).await;
    assert!(!d.allowed);
    near(
        d.retry_after,
        Duration::from_millis(135_060 - 60_000),
        "retry_after in debt",
    );
    // A refund beyond the debt empties the bucket and no further.
    l.settle("contract:settle", 1000, MINUTE, -1_000_000).await;
    assert_eq!(
        l.check("contract:settle", 1000, MINUTE, 1).await.remaining,
        999
    );
    // Settling a key never checked gives nothing back and can take.
    l.settle("contract:settle-new", 10, MINUTE, -5).await;
    assert_eq!(
        l.check("contract:settle-new", 10, MINUTE, 1)
            .await
            .remaining,
        9
    );
}

/// Two limiters standing for two processes on one store: 100 checks spread over both,
/// interleaved, against a limit of 50 allow exactly 50.
pub async fn one_limit_across_instances(a: &dyn RateLimiter, b: &dyn RateLimiter) {
    let (x, y) = tokio::join!(take_50(a), take_50(b));
    assert_eq!(x + y, 50, "allowed {x} on one and {y} on the other");
    assert!(x > 0 && y > 0, "both took part: {x} and {y}");
}

async fn take_50(l: &dyn RateLimiter) -> u32 {
    let mut allowed = 0;
    for _ in 0..50 {
        if l.check("contract:shared", 50, MINUTE, 1).await.allowed {
            allowed += 1;
        }
    }
    allowed
}
