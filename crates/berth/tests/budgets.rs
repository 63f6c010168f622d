//! End-to-end tests of budgets and billing: hard budgets under 200 concurrent calls never
//! overspend, calls without `max_tokens` are capped to what the budget affords, runs fail
//! with `budget_exceeded`, alerts reach HMAC-signed webhooks and the audit log, and the
//! usage summary and invoices (JSON and CSV) add up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_testkit::{Backend, OPERATOR_TOKEN, TestServer};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tenant on plan `plan` and its admin key.
async fn tenant(server: &TestServer, name: &str, plan: &str) -> String {
    let t = server
        .call(
            "POST",
            "/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": name, "plan": plan})),
        )
        .await;
    assert_eq!(t.status, 201, "{:?}", t.body);
    server
        .create_key(t.body["id"].as_str().unwrap(), "admin")
        .await
        .1
}

async fn put_policy(server: &TestServer, key: &str, policy: Value) {
    let r = server
        .call("PUT", "/v1/policy", Some(key), Some(policy))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

fn chat(text: &str, max_tokens: Option<u32>) -> Value {
    let mut b = json!({"model": "mock/echo", "messages": [{"role": "user", "content": text}]});
    if let Some(m) = max_tokens {
        b["max_tokens"] = json!(m);
    }
    b
}

fn cost_of(a: &berth_testkit::Answer) -> f64 {
    a.headers["x-berth-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The usage summary once no reservation is held any more (settlements are written just
/// after each answer).
async fn settled_summary(server: &TestServer, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = server.get("/v1/usage/summary", key).await;
        assert_eq!(s.status, 200, "{:?}", s.body);
        let held: f64 = s.body["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["reserved_usd"].as_f64().unwrap())
            .sum();
        if held == 0.0 {
            return s.body;
        }
        assert!(
            Instant::now() < deadline,
            "reservations never settled: {:?}",
            s.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const PROMPT: &str = "a budget proof needs a prompt of some length to cost something";

async fn concurrent_calls_against(server: TestServer) {
    let key = tenant(&server, "race", "pro").await;
    // What one call costs at most (its max_tokens) and really.
    let probe = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat(PROMPT, Some(40))),
        )
        .await;
    assert_eq!(probe.status, 200);
    let actual = cost_of(&probe);
    let input_tokens = probe.body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(actual > 0.0);
    // A budget that affords about ten calls at their worst case, on top of the probe's
    // spend (the counter starts from the month's usage).
    let worst = actual * (input_tokens as f64 + 40.0)
        / (input_tokens as f64 + probe.body["usage"]["completion_tokens"].as_f64().unwrap());
    let limit = actual + 10.0 * worst;
    put_policy(
        &server,
        &key,
        json!({"budgets": [{"scope": "tenant", "period": "month", "limit_usd": limit, "hard": true}]}),
    )
    .await;
    let server = Arc::new(server);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (server, key) = (server.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            server
                .call(
                    "POST",
                    "/v1/chat/completions",
                    Some(&key),
                    Some(chat(PROMPT, Some(40))),
                )
                .await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            200 => ok += 1,
            402 => {
                assert_eq!(a.body["error"]["type"], "budget_exceeded", "{:?}", a.body);
                refused += 1;
            }
            other => panic!("unexpected {other}: {:?}", a.body),
        }
    }
    assert_eq!(ok + refused, 200);
    assert!(
        ok >= 10,
        "the budget affords ten worst cases: {ok} succeeded"
    );
    assert!(refused > 0, "200 calls cannot all fit");
    let summary = settled_summary(&server, &key).await;
    let b = &summary["budgets"][0];
    let spent = b["spent_usd"].as_f64().unwrap();
    assert!(
        spent <= limit + 1e-9,
        "spent {spent} over the limit {limit}"
    );
    assert_eq!(b["scope"], "tenant");
    // The ledger agrees with the usage events, to the nano-dollar.
    let usage = server.get("/v1/usage", &key).await;
    let billed = usage.body["data"][0]["cost_usd"].as_f64().unwrap();
    assert!(
        (billed - spent).abs() < 1e-9,
        "usage {billed} vs budget {spent}"
    );
    assert!(billed <= limit + 1e-9);
}

#[tokio::test]
async fn two_hundred_concurrent_calls_never_overspend_a_hard_budget_on_sqlite() {
    concurrent_calls_against(TestServer::start().await).await;
}

#[tokio::test]
async fn two_hundred_concurrent_calls_never_overspend_a_hard_budget_on_postgres() {
    let Some(server) = TestServer::start_postgres().await else {
        return;
    };
    concurrent_calls_against(server).await;
}

#[tokio::test]
async fn without_max_tokens_a_call_is_capped_to_what_the_budget_affords_and_runs_fail_cleanly() {
    let server = TestServer::start().await;
    let key = tenant(&server, "tight", "pro").await;
    let long = "word ".repeat(400);
    let probe = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat(&long, None)),
        )
        .await;
    let full = cost_of(&probe);
    // Room for the input and only part of the echo.
    put_policy(
        &server,
        &key,
        json!({"budgets": [{"scope": "tenant", "period": "day", "limit_usd": full * 1.6, "hard": true}]}),
    )
    .await;
    let capped = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat(&long, None)),
        )
        .await;
    assert_eq!(capped.status, 200, "{:?}", capped.body);
    assert_eq!(
        capped.body["choices"][0]["finish_reason"], "length",
        "the answer was cut"
    );
    assert!(cost_of(&capped) < full);
    let s = settled_summary(&server, &key).await;
    assert!(s["budgets"][0]["spent_usd"].as_f64().unwrap() <= full * 1.6 + 1e-9);
    // Once nothing is left, calls are refused before reaching the provider, and a run
    // fails with the budget's reason.
    for _ in 0..5 {
        server
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&key),
                Some(chat(&long, None)),
            )
            .await;
    }
    let refused = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat(&long, None)),
        )
        .await;
    assert_eq!(refused.status, 402, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "budget_exceeded");
    let d = server
        .call(
            "POST",
            "/v1/agents/bot/versions",
            Some(&key),
            Some(json!({"manifest": {"name": "bot", "model": {"name": "mock/echo"}}})),
        )
        .await;
    assert_eq!(d.status, 201);
    let run = server
        .call(
            "POST",
            "/v1/agents/bot/runs",
            Some(&key),
            Some(json!({"input": long})),
        )
        .await;
    assert_eq!(run.body["status"], "failed", "{:?}", run.body);
    assert_eq!(run.body["error"]["type"], "budget_exceeded");
    // Refused because what is left cannot pay for the input of one more call, never above
    // the limit.
    let s = settled_summary(&server, &key).await;
    let spent = s["budgets"][0]["spent_usd"].as_f64().unwrap();
    assert!(spent <= full * 1.6 + 1e-9, "{s:?}");
    assert!(full * 1.6 - spent < full, "{s:?}");
    // Another tenant is not held to this one's budget.
    let other = tenant(&server, "roomy", "pro").await;
    let fine = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&other),
            Some(chat(&long, None)),
        )
        .await;
    assert_eq!(fine.status, 200);
}

/// A webhook receiver on 127.0.0.1: what it was sent, with the signature header.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let sig = headers
                    .get("berth-signature")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                seen.lock().unwrap().push((sig, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test]
async fn alerts_reach_signed_webhooks_and_the_audit_log_and_invoices_add_up() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.egress.allow_private = vec!["127.0.0.0/8".into()];
        let mut plans = berth_core::plan::default_plans();
        plans.get_mut("pro").unwrap().markup_percent = 10.0;
        c.plans = plans;
    })
    .await;
    let key = tenant(&server, "alerted", "pro").await;
    let (url, got) = receiver().await;
    let s = server
        .call(
            "PUT",
            "/v1/secrets/HOOK_SECRET",
            Some(&key),
            Some(json!({"value": "whsec-test-0123"})),
        )
        .await;
    assert_eq!(s.status, 204);
    let probe = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat(PROMPT, Some(10))),
        )
        .await;
    let one = cost_of(&probe);
    put_policy(
        &server,
        &key,
        json!({"budgets": [{"scope": "agent:bot", "period": "month", "limit_usd": one * 4.0, "hard": false, "alert_at": [0.5, 1.0]}],
               "webhooks": [{"url": url, "events": ["budget.alert"], "secret": "HOOK_SECRET"}]}),
    )
    .await;
    // Six calls attributed to agent `bot` pass a soft budget of four: alerts at 50% and
    // 100%, each once, and no call is refused.
    for _ in 0..6 {
        let r = server
            .http
            .post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth(&key)
            .header("Berth-Agent", "bot")
            .json(&chat(PROMPT, Some(10)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "webhooks never came: {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deliveries = got.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 2, "one per fraction: {deliveries:?}");
    let mut fractions = Vec::new();
    for (sig, body) in &deliveries {
        let t: i64 = sig
            .strip_prefix("t=")
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            sig,
            &berth_platform::budgets::signature("whsec-test-0123", t, body),
            "signed with the tenant's secret"
        );
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["type"], "budget.alert");
        assert_eq!(v["data"]["scope"], "agent:bot");
        fractions.push(v["data"]["fraction"].as_f64().unwrap());
        assert!(
            !body.contains("whsec-test-0123"),
            "the secret itself is never sent"
        );
    }
    fractions.sort_by(f64::total_cmp);
    assert_eq!(fractions, [0.5, 1.0]);
    let audit = server
        .get("/v1/audit?limit=500", &key)
        .await
        .body
        .to_string();
    assert_eq!(audit.matches("budget.alert").count(), 2, "{audit}");
    let summary = settled_summary(&server, &key).await;
    let b = summary["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"] == "agent:bot")
        .unwrap()
        .clone();
    assert_eq!(b["state"], "exceeded");
    assert!(summary["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["stored_bytes"], 0, "nothing deployed yet");
    let d = server
        .call(
            "POST",
            "/v1/agents/bot/versions",
            Some(&key),
            Some(json!({"manifest": {"name": "bot", "model": {"name": "mock/echo"}}})),
        )
        .await;
    assert_eq!(d.status, 201);
    let stored = server.get("/v1/usage/summary", &key).await.body["stored_bytes"]
        .as_i64()
        .unwrap();
    assert!(stored > 0, "the deployed manifest is stored");
    assert!(
        summary["projected_cost_usd"].as_f64().unwrap() >= summary["cost_usd"].as_f64().unwrap()
    );

    // The month's invoice: its lines add up to the subtotal, the plan's markup is on top.
    let month = summary["period"].as_str().unwrap().to_owned();
    let inv = server.get(&format!("/v1/invoices/{month}"), &key).await;
    assert_eq!(inv.status, 200, "{:?}", inv.body);
    let lines = inv.body["lines"].as_array().unwrap();
    let llm = lines
        .iter()
        .find(|l| l["meter"] == "llm" && l["model"] == "mock/echo")
        .unwrap();
    assert_eq!(llm["quantity"], 7);
    assert!(llm["unit_price_input_usd_per_million"].as_f64().is_some());
    let sum: i64 = lines
        .iter()
        .map(|l| l["amount_nano_usd"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, inv.body["subtotal_nano_usd"].as_i64().unwrap());
    let subtotal = inv.body["subtotal_nano_usd"].as_i64().unwrap();
    assert_eq!(
        inv.body["markup_nano_usd"].as_i64().unwrap(),
        (subtotal as f64 * 0.1).round() as i64
    );
    assert_eq!(
        inv.body["total_nano_usd"].as_i64().unwrap(),
        subtotal + inv.body["markup_nano_usd"].as_i64().unwrap()
    );
    let usage_cost = server.get("/v1/usage", &key).await.body["data"][0]["cost_usd"]
        .as_f64()
        .unwrap();
    assert!((inv.body["subtotal_usd"].as_f64().unwrap() - usage_cost).abs() < 1e-9);
    let csv = server
        .http
        .get(format!("{}/v1/invoices/{month}", server.url))
        .bearer_auth(&key)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("meter,provider,model,quantity"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("llm,mock,mock/echo,7,calls")),
        "{text}"
    );
    assert!(text.lines().last().unwrap().starts_with("total,"));
    // A bad month is refused; another month is empty.
    assert_eq!(server.get("/v1/invoices/2026-13", &key).await.status, 400);
    let empty = server.get("/v1/invoices/2001-01", &key).await;
    assert_eq!(empty.body["total_nano_usd"], 0);
    assert_eq!(empty.body["final"], true);
}

#[tokio::test]
async fn the_plan_cap_holds_under_a_larger_or_a_soft_tenant_budget() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        let mut plans = berth_core::plan::default_plans();
        let mut capped = plans["free"].clone();
        capped.monthly_budget_usd = Some(0.002);
        capped.requests_per_minute = 1000;
        plans.insert("capped".to_owned(), capped);
        c.plans = plans;
    })
    .await;
    let long = "word ".repeat(200);
    for (name, hard) in [("larger", true), ("soft", false)] {
        let key = tenant(&server, name, "capped").await;
        // The tenant's own monthly budget is far above the plan's cap (or only alerts).
        put_policy(
            &server,
            &key,
            json!({"budgets": [{"scope": "tenant", "period": "month", "limit_usd": 100.0, "hard": hard}]}),
        )
        .await;
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..10 {
            let r = server
                .call(
                    "POST",
                    "/v1/chat/completions",
                    Some(&key),
                    Some(chat(&long, Some(300))),
                )
                .await;
            match r.status {
                200 => ok += 1,
                402 => {
                    assert_eq!(r.code(), "budget_exceeded", "{:?}", r.body);
                    assert!(
                        r.body["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("plan"),
                        "{:?}",
                        r.body
                    );
                    refused += 1;
                }
                other => panic!("{name}: unexpected {other}: {:?}", r.body),
            }
        }
        assert!(
            ok >= 1 && refused >= 1,
            "{name}: {ok} ok, {refused} refused"
        );
        let s = settled_summary(&server, &key).await;
        let budgets = s["budgets"].as_array().unwrap();
        let plan = budgets
            .iter()
            .find(|b| b["scope"] == "plan")
            .unwrap_or_else(|| panic!("{name}: no plan budget in {budgets:?}"));
        assert_eq!(plan["hard"], true);
        assert!((plan["limit_usd"].as_f64().unwrap() - 0.002).abs() < 1e-12);
        let spent = plan["spent_usd"].as_f64().unwrap();
        assert!(spent <= 0.002 + 1e-12, "{name}: spent {spent} over the cap");
        let own = budgets.iter().find(|b| b["scope"] == "tenant").unwrap();
        assert!((own["spent_usd"].as_f64().unwrap() - spent).abs() < 1e-12);
    }
    server.stop().await;
}

async fn deploy_agent(server: &TestServer, key: &str, manifest: Value) {
    let name = manifest["name"].as_str().unwrap().to_owned();
    let d = server
        .call(
            "POST",
            &format!("/v1/agents/{name}/versions"),
            Some(key),
            Some(json!({ "manifest": manifest })),
        )
        .await;
    assert_eq!(d.status, 201, "{:?}", d.body);
}

#[tokio::test]
async fn a_run_never_spends_past_its_max_cost_even_within_one_turn() {
    let server = TestServer::start().await;
    let key = tenant(&server, "thrifty", "pro").await;
    let long = "word ".repeat(400);
    // What one turn costs with no limit.
    deploy_agent(
        &server,
        &key,
        json!({"name": "free-spender", "model": {"name": "mock/echo"}}),
    )
    .await;
    let probe = server
        .call(
            "POST",
            "/v1/agents/free-spender/runs",
            Some(&key),
            Some(json!({"input": long})),
        )
        .await;
    assert_eq!(probe.body["status"], "succeeded", "{:?}", probe.body);
    let turn = probe.body["usage"]["cost_usd"].as_f64().unwrap();
    // A limit that pays for the input and only part of the answer: the turn is held to it
    // (the answer cut where the money ends), so the run fails at its limit, not past it.
    let limit = turn * 0.6;
    deploy_agent(
        &server,
        &key,
        json!({"name": "thrifty", "model": {"name": "mock/echo"}, "limits": {"max_cost_usd": limit}}),
    )
    .await;
    let run = server
        .call(
            "POST",
            "/v1/agents/thrifty/runs",
            Some(&key),
            Some(json!({"input": long})),
        )
        .await;
    assert_eq!(
        (
            run.body["status"].as_str(),
            run.body["error"]["code"].as_str()
        ),
        (Some("failed"), Some("max_cost_exceeded")),
        "{:?}",
        run.body
    );
    let spent = run.body["usage"]["cost_usd"].as_f64().unwrap();
    assert!(
        spent > 0.0 && spent <= limit + 1e-12,
        "spent {spent} of {limit}"
    );
    // The usage ledger agrees: the run's calls cost no more than its limit.
    let id = run.body["id"].as_str().unwrap();
    let trace = server.get(&format!("/v1/runs/{id}/trace"), &key).await;
    let billed: f64 = trace.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "llm_call")
        .map(|s| s["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(billed > 0.0, "{:?}", trace.body);
    assert!(billed <= limit + 1e-12, "{billed} > {limit}");
    // A limit too small for even the input is refused before the call.
    deploy_agent(
        &server,
        &key,
        json!({"name": "broke", "model": {"name": "mock/echo"}, "limits": {"max_cost_usd": 1e-9}}),
    )
    .await;
    let run = server
        .call(
            "POST",
            "/v1/agents/broke/runs",
            Some(&key),
            Some(json!({"input": long})),
        )
        .await;
    assert_eq!(
        run.body["error"]["code"], "max_cost_exceeded",
        "{:?}",
        run.body
    );
    assert_eq!(run.body["usage"]["cost_usd"], 0.0, "{:?}", run.body);
    server.stop().await;
}
