//! End-to-end tests of rate limits: tokens per minute reserved, refused and settled (in
//! memory and in Redis), per-key and per-agent limits that leave the rest of the tenant
//! and its neighbours alone, runs counted as requests, and two servers sharing one
//! PostgreSQL database and one Redis enforcing one limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth::config::{Config, ProviderConfig};
use berth_core::Plan;
use berth_testkit::mock_llm::MockUpstream;
use berth_testkit::{Answer, Backend, TestServer, pg_test_database, redis_test_url, unique_prefix};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn plan(requests_per_minute: u32, tokens_per_minute: u64) -> Plan {
    Plan {
        requests_per_minute,
        tokens_per_minute,
        concurrent_runs: 10,
        monthly_budget_usd: None,
        weight: 1,
        markup_percent: 0.0,
    }
}

fn with_plan(c: &mut Config, p: Plan) {
    c.plans = BTreeMap::from([("free".to_owned(), p)]);
    c.default_plan = "free".to_owned();
}

fn with_redis(c: &mut Config, url: &str, prefix: &str) {
    c.redis_url = Some(url.to_owned());
    c.redis_key_prefix = prefix.to_owned();
}

fn upstream(c: &mut Config, mock: &MockUpstream) {
    c.providers = vec![ProviderConfig {
        name: "up".into(),
        kind: "openai".into(),
        base_url: Some(mock.url.clone()),
        api_key_env: None,
        timeout: Some("10s".into()),
        api_key: Some("sk-test-upstream-key-0123456789".into()),
    }];
    c.egress.allow_private = vec!["127.0.0.0/8".into()];
}

async fn tenant(server: &TestServer, name: &str) -> (String, String) {
    let id = server.create_tenant(name).await;
    let key = server.create_key(&id, "admin").await.1;
    (id, key)
}

fn chat(model: &str, max_tokens: u32) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "x"}]})
}

async fn post_chat(server: &TestServer, key: &str, body: Value) -> Answer {
    server
        .call("POST", "/v1/chat/completions", Some(key), Some(body))
        .await
}

/// A chat call attributed to `agent` with `Berth-Agent`.
async fn chat_as(server: &TestServer, key: &str, agent: &str) -> Answer {
    let resp = server
        .http
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(key)
        .header("berth-agent", agent)
        .json(&chat("mock/echo", 16))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        headers,
    }
}

fn header(a: &Answer, name: &str) -> String {
    a.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", a.headers))
        .to_str()
        .unwrap()
        .to_owned()
}

fn number(a: &Answer, name: &str) -> u64 {
    header(a, name).parse().unwrap()
}

fn assert_refused(a: &Answer, code: &str) {
    assert_eq!(
        (a.status, a.body["error"]["type"].as_str(), a.code()),
        (429, Some("rate_limited"), code),
        "{:?}",
        a.body
    );
    let retry = number(a, "retry-after");
    assert!((1..=60).contains(&retry), "retry-after {retry}");
}

/// A tenant of 1,000 tokens a minute: a slow call reserves 900 + its input, so a second
/// one at the same time is refused; once the first has finished its reservation is settled
/// down to what it used and the next calls (streamed or not) fit again.
async fn tokens_case(server: &TestServer) {
    let (_, a) = tenant(server, "tokens").await;
    let (_, neighbour) = tenant(server, "neighbour").await;
    let put = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&a),
            Some(json!({"limits": {"tokens_per_minute": 1000}})),
        )
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);

    let slow = {
        let (url, http, a) = (server.url.clone(), server.http.clone(), a.clone());
        tokio::spawn(async move {
            let resp = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&a)
                .json(&chat("up/slow-1500", 900))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.headers().clone())
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = post_chat(server, &a, chat("mock/echo", 900)).await;
    assert_refused(&refused, "tokens_per_minute");
    assert_eq!(header(&refused, "x-ratelimit-limit-tokens"), "1000");
    // About 95 left after the first reservation, plus what 400 ms gave back (16 a second).
    let left = number(&refused, "x-ratelimit-remaining-tokens");
    assert!(left < 120, "{left}");
    assert!(header(&refused, "x-ratelimit-reset-tokens").ends_with('s'));
    // The request limit passed, and says so.
    assert_eq!(header(&refused, "x-ratelimit-limit-requests"), "600");
    // The neighbour has its own bucket.
    assert_eq!(
        post_chat(server, &neighbour, chat("mock/echo", 900))
            .await
            .status,
        200
    );

    let (status, headers) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
    let left: u64 = headers["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..100).contains(&left), "{left}");

    // Settled: the slow call used a few tokens, so 900 fit again.
    let r = post_chat(server, &a, chat("mock/echo", 900)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A stream settles when it ends.
    let mut body = chat("mock/echo", 900);
    body["stream"] = json!(true);
    let resp = server
        .http
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&a)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-limit-tokens"], "1000");
    assert!(resp.text().await.unwrap().contains("[DONE]"));
    let r = post_chat(server, &a, chat("mock/echo", 900)).await;
    assert_eq!(r.status, 200, "after a settled stream: {:?}", r.body);
    // A request larger than the whole limit is not refused forever: it waits for a full
    // bucket and takes all of it (here the bucket is not full).
    let r = post_chat(server, &a, chat("mock/echo", 5000)).await;
    assert_refused(&r, "tokens_per_minute");
}

#[tokio::test]
async fn tokens_per_minute_are_reserved_refused_and_settled() {
    let mock = MockUpstream::start().await;
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        with_plan(c, plan(600, 100_000));
        upstream(c, &mock);
    })
    .await;
    tokens_case(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn tokens_per_minute_in_redis() {
    let Some(url) = redis_test_url().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let prefix = unique_prefix();
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        with_plan(c, plan(600, 100_000));
        upstream(c, &mock);
        with_redis(c, &url, &prefix);
    })
    .await;
    tokens_case(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn per_key_and_per_agent_limits_leave_the_rest_alone() {
    let server =
        TestServer::start_with(Backend::Sqlite, |c| with_plan(c, plan(600, 1_000_000))).await;
    let (t, admin) = tenant(&server, "keys").await;
    let (_, neighbour) = tenant(&server, "neighbour").await;
    // The plan caps the per-key limit too: 1,000 asked, 600 applied, then 2.
    let put = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&admin),
            Some(json!({"limits": {"per_key_requests_per_minute": 1000}})),
        )
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let r = post_chat(&server, &admin, chat("mock/echo", 16)).await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "600");
    let put = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&admin),
            Some(json!({"limits": {"per_key_requests_per_minute": 2, "per_agent_requests_per_minute": 3}})),
        )
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);

    let (_, k1) = server.create_key(&t, "invoker").await;
    for left in [1, 0] {
        let r = post_chat(&server, &k1, chat("mock/echo", 16)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        // The tightest request bucket is the one reported: this key's.
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "2");
        assert_eq!(number(&r, "x-ratelimit-remaining-requests"), left);
    }
    let refused = post_chat(&server, &k1, chat("mock/echo", 16)).await;
    assert_refused(&refused, "key_requests_per_minute");
    assert_eq!(header(&refused, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
    // Another key of the same tenant, and the neighbour, are not affected.
    let (_, k2) = server.create_key(&t, "invoker").await;
    assert_eq!(
        post_chat(&server, &k2, chat("mock/echo", 16)).await.status,
        200
    );
    assert_eq!(
        post_chat(&server, &neighbour, chat("mock/echo", 16))
            .await
            .status,
        200
    );

    // Agent `bot` may take 3 requests a minute, whichever keys make them.
    let (_, k3) = server.create_key(&t, "invoker").await;
    let (_, k4) = server.create_key(&t, "invoker").await;
    let (_, k5) = server.create_key(&t, "invoker").await;
    assert_eq!(chat_as(&server, &k3, "bot").await.status, 200);
    assert_eq!(chat_as(&server, &k3, "bot").await.status, 200);
    assert_eq!(chat_as(&server, &k4, "bot").await.status, 200);
    let refused = chat_as(&server, &k5, "bot").await;
    assert_refused(&refused, "agent_requests_per_minute");
    assert_eq!(header(&refused, "x-ratelimit-limit-requests"), "3");
    assert_eq!(chat_as(&server, &k5, "other").await.status, 200);
    // Invalid policies name their field.
    let bad = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&admin),
            Some(json!({"limits": {"per_agent_requests_per_minute": 0}})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["param"].as_str()),
        (422, Some("limits.per_agent_requests_per_minute")),
        "{:?}",
        bad.body
    );
    server.stop().await;
}

#[tokio::test]
async fn runs_count_against_requests_per_minute() {
    let server =
        TestServer::start_with(Backend::Sqlite, |c| with_plan(c, plan(3, 1_000_000))).await;
    let (t, admin) = tenant(&server, "runs").await;
    let (_, neighbour) = tenant(&server, "neighbour").await;
    let deploy = server
        .call(
            "POST",
            "/v1/agents/helper/versions",
            Some(&admin),
            Some(json!({"manifest": {"name": "helper", "model": {"name": "mock/echo"}, "prompt": {"system": "help"}}})),
        )
        .await;
    assert!(
        deploy.status == 201 || deploy.status == 200,
        "{:?}",
        deploy.body
    );
    let (_, inv) = server.create_key(&t, "invoker").await;
    let run = |input: &str| json!({"input": input});
    let r = server
        .call(
            "POST",
            "/v1/agents/helper/runs",
            Some(&inv),
            Some(run("one")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "3");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "2");
    // A queued run counts when it is asked for.
    let r = server
        .call(
            "POST",
            "/v1/agents/helper/runs",
            Some(&inv),
            Some(json!({"input": "two", "async": true})),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let queued = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        post_chat(&server, &inv, chat("mock/echo", 16)).await.status,
        200
    );
    let refused = server
        .call(
            "POST",
            "/v1/agents/helper/runs",
            Some(&inv),
            Some(run("four")),
        )
        .await;
    assert_refused(&refused, "requests_per_minute");
    assert_refused(
        &post_chat(&server, &inv, chat("mock/echo", 16)).await,
        "requests_per_minute",
    );
    assert_eq!(
        post_chat(&server, &neighbour, chat("mock/echo", 16))
            .await
            .status,
        200
    );
    // Reading a run is not limited; wait for the queued one to end before stopping.
    for _ in 0..100 {
        let r = server.get(&format!("/v1/runs/{queued}"), &inv).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        if r.body["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn two_servers_sharing_postgres_and_redis_enforce_one_limit() {
    let Some(url) = redis_test_url().await else {
        return;
    };
    let Some(db) = pg_test_database().await else {
        return;
    };
    let prefix = unique_prefix();
    let db_url = db.url.clone();
    let a = TestServer::start_with(Backend::Postgres(db), |c| {
        with_plan(c, plan(20, 1_000_000));
        with_redis(c, &url, &prefix);
    })
    .await;
    // The second process: its own data directory, the same database and Redis.
    let b = TestServer::start_with(Backend::Sqlite, |c| {
        c.database_url = Some(db_url.clone());
        with_plan(c, plan(20, 1_000_000));
        with_redis(c, &url, &prefix);
    })
    .await;
    let (_, key) = tenant(&a, "shared").await;
    let mut allowed = [0, 0];
    for i in 0..40 {
        let server = if i % 2 == 0 { &a } else { &b };
        let r = post_chat(server, &key, chat("mock/echo", 16)).await;
        match r.status {
            200 => allowed[i % 2] += 1,
            429 => assert_refused(&r, "requests_per_minute"),
            s => panic!("status {s}: {:?}", r.body),
        }
    }
    assert_eq!(allowed[0] + allowed[1], 20, "allowed on each: {allowed:?}");
    assert_eq!(allowed, [10, 10]);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_redis_that_does_not_answer_at_start_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults().unwrap();
    config.listen = "127.0.0.1:0".to_owned();
    config.data_dir = dir.path().join("data");
    config.operator_token = Some(berth_testkit::OPERATOR_TOKEN.to_owned());
    config.log.level = "error".to_owned();
    config.redis_url = Some("redis://127.0.0.1:1".to_owned());
    let redactor = berth::logging::init(&config.log);
    let err = berth::start(&config, false, &redactor)
        .await
        .err()
        .expect("the start fails");
    assert!(err.to_string().starts_with("redis_url: "), "{err}");
}
