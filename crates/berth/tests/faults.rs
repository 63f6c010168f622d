//! Fault injection, end to end: PostgreSQL goes away mid-run (a TCP proxy in front of it is
//! cut) and comes back. While it is down, requests that need it get a clear 503; answers
//! given meanwhile are still metered once it is back; no run stays `running`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth::config::ProviderConfig;
use berth_testkit::mock_llm::MockUpstream;
use berth_testkit::tcp_proxy::TcpProxy;
use berth_testkit::{Backend, TestServer, pg_test_database};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn until<F: std::future::Future<Output = Option<Value>>>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> F,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn a_postgres_outage_mid_run_answers_503_loses_no_usage_and_strands_no_run() {
    let Some(db) = pg_test_database().await else {
        return;
    };
    let (mut proxy, via_proxy) = TcpProxy::in_front_of(&db.url).await;
    let mock = MockUpstream::start().await;
    let mock_url = mock.url.clone();
    let server = TestServer::start_with(Backend::Postgres(db), move |c| {
        c.database_url = Some(via_proxy);
        c.runs.lease = "1s".into();
        c.providers = vec![ProviderConfig {
            name: "up".into(),
            kind: "openai".into(),
            base_url: Some(mock_url),
            api_key_env: None,
            timeout: Some("30s".into()),
            api_key: Some("sk-upstream-test-key".into()),
        }];
        c.egress.allow_private = vec!["127.0.0.0/8".into()];
    })
    .await;
    let t = server.create_tenant("acme").await;
    let (_, admin) = server.create_key(&t, "admin").await;
    let deployed = server
        .call(
            "POST",
            "/v1/agents/slow/versions",
            Some(&admin),
            Some(json!({"manifest": {"name": "slow", "model": {"name": "up/slow-3000"}}})),
        )
        .await;
    assert_eq!(deployed.status, 201, "{:?}", deployed.body);
    let warm = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&admin),
            Some(chat("mock/echo")),
        )
        .await;
    assert_eq!(warm.status, 200, "{:?}", warm.body);
    let run = server
        .call(
            "POST",
            "/v1/agents/slow/runs",
            Some(&admin),
            Some(json!({"input": "take your time", "async": true})),
        )
        .await;
    assert_eq!(run.status, 202, "{:?}", run.body);
    let run_id = run.body["id"].as_str().unwrap().to_owned();
    until("the run starts", Duration::from_secs(10), || async {
        let r = server.get(&format!("/v1/runs/{run_id}"), &admin).await;
        (r.body["status"] == "running").then_some(r.body)
    })
    .await;

    // The database goes away while the run waits on its model.
    proxy.cut();
    // Everything that needs the database waits at most the pool's acquire timeout, so the
    // calls go together.
    let calls = (0..3).map(|_| {
        server.call(
            "POST",
            "/v1/chat/completions",
            Some(&admin),
            Some(chat("mock/echo")),
        )
    });
    let (calls, down) = tokio::join!(
        futures_util::future::join_all(calls),
        server.get("/v1/runs", &admin)
    );
    let mut answered = 0;
    for r in calls {
        assert!(
            r.status == 200 || r.status == 503,
            "a call during the outage: {} {:?}",
            r.status,
            r.body
        );
        answered += usize::from(r.status == 200);
    }
    assert_eq!(
        (down.status, down.code()),
        (503, "store_unavailable"),
        "{:?}",
        down.body
    );

    // It comes back: requests work again, the run ends (it may not stay running), and
    // every answered call is in the usage.
    proxy.restore().await;
    until("requests work again", Duration::from_secs(30), || async {
        let r = server.get("/v1/runs", &admin).await;
        (r.status == 200).then_some(r.body)
    })
    .await;
    let ended = until("the run ends", Duration::from_secs(30), || async {
        let r = server.get(&format!("/v1/runs/{run_id}"), &admin).await;
        matches!(r.body["status"].as_str(), Some("succeeded" | "failed")).then_some(r.body)
    })
    .await;
    assert!(
        ended["status"] == "succeeded" || ended["error"]["code"] == "interrupted",
        "{ended:?}"
    );
    // The warm call, the calls answered during the outage, and the run's model call (the
    // upstream answered it while the database was down). A call refused with 503 after
    // its upstream had answered (a later step needed the database) is billed too: the
    // upstream's answer cost money. So the usage is at least that, and at most the calls
    // that were refused more.
    let want = 1 + answered as u64 + 1;
    let refused = 3 - answered as u64;
    let usage = until(
        "every answered call is metered",
        Duration::from_secs(30),
        || async {
            let u = server.get("/v1/usage", &admin).await;
            let billed = u.body["data"][0]["llm_calls"].as_u64().unwrap_or(0);
            println!("answered {answered} of 3 during the outage; {billed} calls billed, want {want}..={}", want + refused);
            (billed >= want && billed <= want + refused).then_some(u.body)
        },
    )
    .await;
    // And charged to the budget: the run's settlement failed while the database was down
    // and was retried until it landed, so the plan's budget holds no reservation and has
    // spent exactly what the usage costs.
    let cost = usage["data"][0]["cost_usd"].as_f64().unwrap();
    until("the settlements land", Duration::from_secs(30), || async {
        let s = server.get("/v1/usage/summary", &admin).await;
        let budgets = s.body["budgets"].as_array()?.clone();
        let settled = !budgets.is_empty()
            && budgets.iter().all(|b| {
                b["reserved_usd"].as_f64() == Some(0.0)
                    && (b["spent_usd"].as_f64().unwrap_or(-1.0) - cost).abs() < 1e-9
            });
        settled.then_some(s.body)
    })
    .await;
    server.stop().await;
}
