//! End-to-end tests of fair sharing between tenants: a tenant never executes more runs
//! than its concurrency share (synchronous runs refused with 429, queued ones held back),
//! overload sheds the lowest plan tier first (503), and a tenant flooding at twenty times
//! its limit leaves its neighbour's calls and runs untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth::config::ProviderConfig;
use berth_testkit::mock_llm::MockUpstream;
use berth_testkit::{Backend, OPERATOR_TOKEN, TestServer};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn server(mock: &MockUpstream, max_concurrent: usize) -> Arc<TestServer> {
    let url = mock.url.clone();
    Arc::new(
        TestServer::start_with(Backend::Sqlite, move |c| {
            c.providers = vec![ProviderConfig {
                name: "up".into(),
                kind: "openai".into(),
                base_url: Some(url),
                api_key_env: None,
                timeout: Some("30s".into()),
                api_key: Some("sk-fairness-test".into()),
            }];
            c.runs.max_concurrent = max_concurrent;
        })
        .await,
    )
}

/// A tenant on `plan` with an admin key and an agent `slow` whose model answers after
/// `ms` milliseconds.
async fn tenant(server: &TestServer, name: &str, plan: &str, ms: u64) -> String {
    let t = server
        .call(
            "POST",
            "/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": name, "plan": plan})),
        )
        .await;
    assert_eq!(t.status, 201, "{:?}", t.body);
    let key = server
        .create_key(t.body["id"].as_str().unwrap(), "admin")
        .await
        .1;
    let d = server
        .call(
            "POST",
            "/v1/agents/slow/versions",
            Some(&key),
            Some(json!({"manifest": {"name": "slow", "model": {"name": format!("up/slow-{ms}")}}})),
        )
        .await;
    assert_eq!(d.status, 201, "{:?}", d.body);
    key
}

async fn run(server: &TestServer, key: &str, body: Value) -> berth_testkit::Answer {
    server
        .call("POST", "/v1/agents/slow/runs", Some(key), Some(body))
        .await
}

async fn running(server: &TestServer, key: &str) -> usize {
    server.get("/v1/runs?status=running", key).await.body["data"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_tenant_never_executes_more_runs_than_its_share() {
    let mock = MockUpstream::start().await;
    let server = server(&mock, 256).await;
    // Plan free: two runs at once.
    let a = tenant(&server, "a", "free", 700).await;
    let b = tenant(&server, "b", "free", 700).await;
    let mut calls = Vec::new();
    for (key, n) in [(&a, 5), (&b, 2)] {
        for _ in 0..n {
            let (server, key) = (server.clone(), key.clone());
            calls.push(tokio::spawn(async move {
                (key.clone(), run(&server, &key, json!({"input": "x"})).await)
            }));
        }
    }
    let (mut a_ok, mut a_refused, mut b_ok) = (0, 0, 0);
    for c in calls {
        let (key, r) = c.await.unwrap();
        match (key == a, r.status) {
            (true, 200) => a_ok += 1,
            (true, 429) => {
                assert_eq!(r.code(), "concurrency_limited", "{:?}", r.body);
                assert!(r.headers.contains_key("retry-after"));
                a_refused += 1;
            }
            (false, 200) => b_ok += 1,
            other => panic!("{other:?}: {:?}", r.body),
        }
    }
    assert_eq!(
        (a_ok, a_refused, b_ok),
        (2, 3, 2),
        "a's share is two; b is not affected"
    );

    // Queued runs wait for the share instead: never more than two execute at once.
    let mut ids = Vec::new();
    for _ in 0..6 {
        let r = run(&server, &a, json!({"input": "queued", "async": true})).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut peak = 0;
    loop {
        let now = running(&server, &a).await;
        peak = peak.max(now);
        assert!(now <= 2, "{now} runs of a execute at once");
        let done = server.get("/v1/runs?status=succeeded", &a).await.body["data"]
            .as_array()
            .unwrap()
            .len();
        if done == 2 + 6 {
            break;
        }
        assert!(Instant::now() < deadline, "queued runs never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(peak, 2, "the share was used");
}

#[tokio::test]
async fn overload_sheds_the_lowest_tier_first() {
    let mock = MockUpstream::start().await;
    // Ten runs at once on this node: the free tier may fill eight, pro nine.
    let server = server(&mock, 10).await;
    let mut free = Vec::new();
    for i in 0..5 {
        free.push(tenant(&server, &format!("free{i}"), "free", 1500).await);
    }
    let pro = tenant(&server, "pro", "pro", 1500).await;
    let mut held = Vec::new();
    for key in free.iter().take(4) {
        for _ in 0..2 {
            let (server, key) = (server.clone(), key.clone());
            held.push(tokio::spawn(async move {
                run(&server, &key, json!({"input": "x"})).await.status
            }));
        }
    }
    // Wait until the eight are executing.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut n = 0;
        for key in free.iter().take(4) {
            n += running(&server, key).await;
        }
        if n == 8 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} runs started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shed = run(&server, &free[4], json!({"input": "x"})).await;
    assert_eq!(shed.status, 503, "{:?}", shed.body);
    assert_eq!(shed.code(), "overloaded");
    assert!(shed.headers.contains_key("retry-after"));
    let kept = run(&server, &pro, json!({"input": "x"})).await;
    assert_eq!(
        kept.status, 200,
        "the higher tier still gets in: {:?}",
        kept.body
    );
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    // Once the node has room again, the free tier is admitted.
    assert_eq!(
        run(&server, &free[4], json!({"input": "x"})).await.status,
        200
    );
}

#[tokio::test]
async fn a_tenant_flooding_at_twenty_times_its_limit_leaves_its_neighbour_untouched() {
    let mock = MockUpstream::start().await;
    let server = server(&mock, 256).await;
    // Plan free: 60 requests per minute (a burst of 60, then one a second). A sends 20 per
    // second (1,200 a minute) for 6 s, B its normal 5 per second.
    let a = tenant(&server, "noisy", "free", 10).await;
    let b = tenant(&server, "quiet", "pro", 10).await;
    let chat = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5});
    let flood = |key: String, per_sec: u64| {
        let (server, chat) = (server.clone(), chat.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_sec));
            let mut calls = Vec::new();
            for _ in 0..per_sec * 6 {
                tick.tick().await;
                let (server, chat, key) = (server.clone(), chat.clone(), key.clone());
                calls.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let r = server
                        .call("POST", "/v1/chat/completions", Some(&key), Some(chat))
                        .await;
                    (r.status, started.elapsed())
                }));
            }
            let mut out = Vec::new();
            for c in calls {
                out.push(c.await.unwrap());
            }
            out
        })
    };
    let noisy = flood(a.clone(), 20);
    let quiet = flood(b.clone(), 5);
    let noisy = noisy.await.unwrap();
    let quiet = quiet.await.unwrap();
    let a_ok = noisy.iter().filter(|(s, _)| *s == 200).count();
    let a_limited = noisy.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(a_ok + a_limited, 120, "A got only answers and rate limits");
    assert!(
        a_ok <= 60 + 7,
        "A stayed within its limit (a burst of 60, then one a second): {a_ok}"
    );
    assert!(a_limited > 0);
    assert!(
        quiet.iter().all(|(s, _)| *s == 200),
        "B saw errors: {quiet:?}"
    );
    // Runs too: A's flood of runs beyond its concurrency is refused, B's all run.
    let mut calls = Vec::new();
    for key in [&a, &a, &a, &a, &a, &a, &b, &b] {
        let (server, key) = (server.clone(), key.clone());
        calls.push(tokio::spawn(async move {
            (
                key.clone(),
                run(&server, &key, json!({"input": "x"})).await.status,
            )
        }));
    }
    for c in calls {
        let (key, status) = c.await.unwrap();
        if key == b {
            assert_eq!(status, 200, "B's run was refused");
        } else {
            assert!(status == 200 || status == 429, "{status}");
        }
    }
}
