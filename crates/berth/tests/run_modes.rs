//! End-to-end tests of asynchronous, streamed and cancelled runs, tool calls through the
//! built-in `mock` tools, approvals (approve, deny, expiry, policy patterns), and the
//! events endpoint replaying and following runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth::config::ProviderConfig;
use berth_testkit::mock_llm::MockUpstream;
use berth_testkit::{Backend, TestServer};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn deploy(server: &TestServer, key: &str, manifest: Value) {
    let agent = manifest["name"].as_str().unwrap().to_owned();
    let r = server
        .call(
            "POST",
            &format!("/v1/agents/{agent}/versions"),
            Some(key),
            Some(json!({"manifest": manifest})),
        )
        .await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
}

/// An agent on `mock/tools` that may call the mock tools; `approval` gates some of them.
fn tool_agent(name: &str, approval: &[&str]) -> Value {
    json!({"name": name, "model": {"name": "mock/tools"},
           "tools": {"use": ["mock__*"], "approval": approval}})
}

async fn run(server: &TestServer, key: &str, agent: &str, body: Value) -> (u16, Value) {
    let r = server
        .call(
            "POST",
            &format!("/v1/agents/{agent}/runs"),
            Some(key),
            Some(body),
        )
        .await;
    (r.status, r.body)
}

/// Polls the run until `done` holds (or fails the test after 10 s).
async fn wait_run(
    server: &TestServer,
    key: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = server.get(&format!("/v1/runs/{id}"), key).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        if done(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} never got there: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ended(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// Parses SSE text into (event, data) pairs.
fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|frame| {
            let mut kind = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = Some(k.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).ok();
                }
            }
            Some((kind?, data?))
        })
        .collect()
}

/// Reads an SSE answer to its end (bounded); the events and the content type.
async fn sse(
    server: &TestServer,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, String, Vec<(String, Value)>) {
    let mut req = server
        .http
        .request(method.parse().unwrap(), format!("{}{}", server.url, path))
        .bearer_auth(key)
        .header("accept", "text/event-stream");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("the stream ends when the run does")
        .unwrap();
    (status, ctype, parse_sse(&text))
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(k, _)| k.as_str()).collect()
}

fn terminal_count(events: &[(String, Value)]) -> usize {
    events
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "run.completed" | "run.failed" | "run.cancelled"))
        .count()
}

async fn setup(server: &TestServer) -> (String, String, String) {
    let t = server.create_tenant("modes").await;
    let (_, dev) = server.create_key(&t, "developer").await;
    let (_, inv) = server.create_key(&t, "invoker").await;
    (t, dev, inv)
}

#[tokio::test]
async fn async_runs_are_queued_executed_and_replayed() {
    let server = TestServer::start().await;
    let (_, dev, inv) = setup(&server).await;
    deploy(
        &server,
        &dev,
        json!({"name": "echo", "model": {"name": "mock/echo"}}),
    )
    .await;
    let (status, body) = run(
        &server,
        &inv,
        "echo",
        json!({"input": "queued hello", "async": true}),
    )
    .await;
    assert_eq!(status, 202, "{body:?}");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().unwrap().to_owned();
    let done = wait_run(&server, &inv, &id, ended).await;
    assert_eq!(
        (done["status"].as_str(), done["output"].as_str()),
        (Some("succeeded"), Some("queued hello"))
    );
    assert_eq!(done["usage"]["llm_calls"], 1);
    // The finished run's events are replayed from the store, in order, with one end.
    let (status, ctype, events) =
        sse(&server, "GET", &format!("/v1/runs/{id}/events"), &inv, None).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/event-stream"));
    assert_eq!(
        kinds(&events),
        ["run.started", "message.delta", "run.completed"]
    );
    assert_eq!(events[1].1["text"], "queued hello");
    assert_eq!(events[2].1["run"]["status"], "succeeded");
    // Filters of the run list see it.
    let listed = server
        .get("/v1/runs?agent=echo&status=succeeded", &inv)
        .await;
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    assert!(
        server.get("/v1/runs?status=queued", &inv).await.body["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn streamed_runs_send_deltas_tools_and_exactly_one_end() {
    let server = TestServer::start().await;
    let (_, dev, inv) = setup(&server).await;
    deploy(
        &server,
        &dev,
        json!({"name": "echo", "model": {"name": "mock/echo"}}),
    )
    .await;
    let (status, ctype, events) = sse(
        &server,
        "POST",
        "/v1/agents/echo/runs",
        &inv,
        Some(json!({"input": "stream me please", "stream": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/event-stream"));
    assert_eq!(events.first().unwrap().0, "run.started");
    assert_eq!(events.last().unwrap().0, "run.completed");
    assert_eq!(terminal_count(&events), 1);
    let text: String = events
        .iter()
        .filter(|(k, _)| k == "message.delta")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "stream me please");
    assert_eq!(
        events.last().unwrap().1["run"]["output"],
        "stream me please"
    );

    // `Accept: text/event-stream` alone asks for a stream too; tool calls show as events.
    deploy(&server, &dev, tool_agent("tooly", &[])).await;
    let (_, _, events) = sse(
        &server,
        "POST",
        "/v1/agents/tooly/runs",
        &inv,
        Some(json!({"input": "use mock__echo"})),
    )
    .await;
    let k = kinds(&events);
    let call = k
        .iter()
        .position(|k| *k == "tool.call")
        .expect("a tool.call event");
    assert_eq!(k[call + 1], "tool.result");
    assert_eq!(events[call].1["tool"], "mock__echo");
    assert_eq!(events[call + 1].1["result"], r#"{"echo":{}}"#);
    assert_eq!(*k.last().unwrap(), "run.completed");
    // Replaying the finished run gives the same kinds, text joined per model turn.
    let id = events[0].1["run"]["id"].as_str().unwrap().to_owned();
    let (_, _, replay) = sse(&server, "GET", &format!("/v1/runs/{id}/events"), &inv, None).await;
    let live_kinds: Vec<&str> = k
        .iter()
        .copied()
        .filter(|k| *k != "message.delta")
        .collect();
    let replay_kinds: Vec<&str> = kinds(&replay)
        .into_iter()
        .filter(|k| *k != "message.delta")
        .collect();
    assert_eq!(live_kinds, replay_kinds);
}

#[tokio::test]
async fn tool_calls_go_through_the_tool_interface_and_the_allow_lists() {
    let server = TestServer::start().await;
    let (_, dev, inv) = setup(&server).await;
    deploy(&server, &dev, tool_agent("tooly", &[])).await;
    let (status, body) = run(
        &server,
        &inv,
        "tooly",
        json!({"input": "try mock__fail then stop", "thread": "new"}),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["output"], "tool results: mock__fail always fails");
    assert_eq!(body["usage"]["tool_calls"], 1);
    assert_eq!(body["usage"]["llm_calls"], 2);
    let id = body["id"].as_str().unwrap();
    let trace = server.get(&format!("/v1/runs/{id}/trace"), &inv).await;
    let steps = trace.body["data"].as_array().unwrap();
    let types: Vec<&str> = steps.iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["llm_call", "tool_call", "llm_call"]);
    assert_eq!(steps[1]["tool"], "mock__fail");
    assert_eq!(steps[1]["error"], "mock__fail always fails");
    assert!(steps[1]["latency_ms"].is_u64());
    // The model was offered exactly the tools both allow-lists permit.
    assert_eq!(
        steps[0]["request"]["messages"].as_array().unwrap().len(),
        1,
        "one user message"
    );
    // The thread keeps the tool exchange, and the next run replays it to the model.
    let thread = body["thread"].as_str().unwrap();
    let th = server.get(&format!("/v1/threads/{thread}"), &inv).await;
    let roles: Vec<&str> = th.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(
        th.body["messages"][1]["tool_calls"][0]["name"],
        "mock__fail"
    );
    assert_eq!(th.body["messages"][2]["tool_results"][0]["is_error"], true);
    let (_, again) = run(
        &server,
        &inv,
        "tooly",
        json!({"input": "just talk", "thread": thread}),
    )
    .await;
    let trace = server
        .get(
            &format!("/v1/runs/{}/trace", again["id"].as_str().unwrap()),
            &inv,
        )
        .await;
    assert_eq!(
        trace.body["data"][0]["request"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // Tool calls are metered per tool (the tool in `model`, its server in `provider`).
    let usage = server.get("/v1/usage?group_by=provider,model", &inv).await;
    let row = usage.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "mock__fail")
        .cloned()
        .unwrap();
    assert_eq!(
        (row["tool_calls"].as_i64(), row["provider"].as_str()),
        (Some(1), Some("mock")),
        "{row}"
    );
    assert_eq!(row["requests"], 0);

    // The tenant policy can take a tool away: the model is not offered it, so a request
    // for it is not honoured.
    let admin = dev_admin(&server, &dev).await;
    let put = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&admin),
            Some(json!({"tools": {"allow": {"*": ["mock__echo"]}}})),
        )
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let (_, body) = run(&server, &inv, "tooly", json!({"input": "try mock__fail"})).await;
    assert_eq!(body["usage"]["tool_calls"], 0, "{body:?}");
    assert_eq!(body["output"], "try mock__fail");
    // An agent whose manifest names no tools is offered none.
    deploy(
        &server,
        &dev,
        json!({"name": "plain", "model": {"name": "mock/tools"}}),
    )
    .await;
    let (_, body) = run(&server, &inv, "plain", json!({"input": "use mock__echo"})).await;
    assert_eq!(body["usage"]["tool_calls"], 0);
}

/// The tenant of a developer key.
async fn setup_tenant(server: &TestServer, key: &str) -> String {
    server.get("/v1/me", key).await.body["tenant"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An admin key of the developer key's tenant.
async fn dev_admin(server: &TestServer, dev: &str) -> String {
    let t = setup_tenant(server, dev).await;
    server.create_key(&t, "admin").await.1
}

#[tokio::test]
async fn approvals_pause_resume_deny_and_are_audited() {
    let server = TestServer::start().await;
    let (t, dev, inv) = setup(&server).await;
    deploy(&server, &dev, tool_agent("gated", &["mock__echo"])).await;
    let (status, body) = run(
        &server,
        &inv,
        "gated",
        json!({"input": "please mock__echo"}),
    )
    .await;
    assert_eq!(status, 202, "{body:?}");
    assert_eq!(body["status"], "waiting_approval");
    let id = body["id"].as_str().unwrap().to_owned();
    // A follower replays the wait, then follows the resumed run live to its end.
    let follower = {
        let (url, key, id) = (server.url.clone(), inv.clone(), id.clone());
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .get(format!("{url}/v1/runs/{id}/events"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let mut text = String::new();
            let mut body = resp.bytes_stream();
            while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .unwrap()
            {
                text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            }
            parse_sse(&text)
        })
    };
    let pending = server.get("/v1/approvals?status=pending", &inv).await;
    let list = pending.body["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{:?}", pending.body);
    assert_eq!(
        (list[0]["tool"].as_str(), list[0]["run"].as_str()),
        (Some("mock__echo"), Some(id.as_str()))
    );
    let apr = list[0]["id"].as_str().unwrap().to_owned();
    assert!(apr.starts_with("apr_"));
    // A viewer cannot decide; another invoker cannot decide someone else's run's call.
    let (_, viewer) = server.create_key(&t, "viewer").await;
    let (_, other) = server.create_key(&t, "invoker").await;
    let decide = |key: String, decision: &'static str| {
        let server = &server;
        let apr = apr.clone();
        async move {
            server
                .call(
                    "POST",
                    &format!("/v1/approvals/{apr}"),
                    Some(&key),
                    Some(json!({"decision": decision, "reason": "ok by me"})),
                )
                .await
        }
    };
    assert_eq!(decide(viewer.clone(), "approve").await.status, 403);
    assert_eq!(
        decide(other.clone(), "approve").await.code(),
        "not_your_run"
    );
    assert_eq!(decide(inv.clone(), "maybe").await.status, 422);
    let ok = decide(inv.clone(), "approve").await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["status"], "approved");
    assert_eq!(
        decide(inv.clone(), "deny").await.status,
        409,
        "decided once"
    );
    let done = wait_run(&server, &inv, &id, ended).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["output"], r#"tool results: {"echo":{}}"#);
    let events = follower.await.unwrap();
    let k = kinds(&events);
    for expected in [
        "run.started",
        "approval.required",
        "approval.decided",
        "tool.call",
        "tool.result",
        "run.completed",
    ] {
        assert!(k.contains(&expected), "{expected} missing from {k:?}");
    }
    assert!(
        k.iter().position(|e| *e == "approval.required") < k.iter().position(|e| *e == "tool.call")
    );
    assert_eq!(terminal_count(&events), 1);
    let trace = server.get(&format!("/v1/runs/{id}/trace"), &inv).await;
    let types: Vec<&str> = trace.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["llm_call", "approval", "approval", "tool_call", "llm_call"]
    );
    assert_eq!(trace.body["data"][2]["status"], "approved");

    // Denied: the tool is not called and the model is told so.
    let (_, body) = run(
        &server,
        &inv,
        "gated",
        json!({"input": "please mock__echo"}),
    )
    .await;
    let id2 = body["id"].as_str().unwrap().to_owned();
    let apr2 = server
        .get(&format!("/v1/approvals?run={id2}"), &inv)
        .await
        .body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let denied = server
        .call(
            "POST",
            &format!("/v1/approvals/{apr2}"),
            Some(&dev),
            Some(json!({"decision": "deny", "reason": "not today"})),
        )
        .await;
    assert_eq!(denied.body["status"], "denied");
    let done = wait_run(&server, &inv, &id2, ended).await;
    assert_eq!(done["status"], "succeeded");
    assert!(
        done["output"]
            .as_str()
            .unwrap()
            .contains("not approved: a reviewer denied it: not today"),
        "{done:?}"
    );
    assert_eq!(done["usage"]["tool_calls"], 0);

    // A policy pattern gates a tool the manifest does not.
    let admin = dev_admin(&server, &dev).await;
    let put = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&admin),
            Some(json!({"tools": {"approval": ["*__fail"]}})),
        )
        .await;
    assert_eq!(put.status, 200);
    let (status, body) = run(
        &server,
        &inv,
        "gated",
        json!({"input": "please mock__fail"}),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("waiting_approval"))
    );

    // Every decision is in the tenant's audit chain, which still verifies.
    let audit = server
        .get("/v1/audit?limit=500", &admin)
        .await
        .body
        .to_string();
    for action in ["approval.request", "approval.approve", "approval.deny"] {
        assert!(audit.contains(action), "{action} not audited");
    }
    assert_eq!(
        server.get("/v1/audit/verify", &admin).await.body["ok"],
        true
    );
}

#[tokio::test]
async fn approvals_expire_into_a_denial() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.runs.approval_timeout = "300ms".into();
        c.runs.lease = "1s".into();
    })
    .await;
    let (_, dev, inv) = setup(&server).await;
    deploy(&server, &dev, tool_agent("gated", &["mock__echo"])).await;
    let (status, body) = run(
        &server,
        &inv,
        "gated",
        json!({"input": "please mock__echo"}),
    )
    .await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().unwrap().to_owned();
    let done = wait_run(&server, &inv, &id, ended).await;
    assert_eq!(done["status"], "succeeded");
    assert!(
        done["output"]
            .as_str()
            .unwrap()
            .contains("no reviewer decided in time"),
        "{done:?}"
    );
    let a = server.get(&format!("/v1/approvals?run={id}"), &inv).await;
    assert_eq!(a.body["data"][0]["status"], "expired");
    assert_eq!(a.body["data"][0]["decided_by"], "system");
}

#[tokio::test]
async fn cancel_stops_queued_running_and_waiting_runs() {
    let mock = MockUpstream::start().await;
    let url = mock.url.clone();
    let server = TestServer::start_with(Backend::Sqlite, move |c| {
        c.providers = vec![ProviderConfig {
            name: "up".into(),
            kind: "openai".into(),
            base_url: Some(url),
            api_key_env: None,
            timeout: Some("30s".into()),
            api_key: Some("sk-upstream-test-key".into()),
        }];
        c.egress.allow_private = vec!["127.0.0.0/8".into()];
    })
    .await;
    let (_, dev, inv) = setup(&server).await;
    deploy(
        &server,
        &dev,
        json!({"name": "slow", "model": {"name": "up/slow-10000"}}),
    )
    .await;
    let (_, body) = run(
        &server,
        &inv,
        "slow",
        json!({"input": "take your time", "async": true}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    wait_run(&server, &inv, &id, |r| r["status"] == "running").await;
    let started = Instant::now();
    let c = server
        .call("POST", &format!("/v1/runs/{id}/cancel"), Some(&inv), None)
        .await;
    assert_eq!(c.status, 200, "{:?}", c.body);
    assert_eq!(c.body["status"], "cancelled");
    assert_eq!(c.body["error"]["code"], "cancelled");
    let (_, _, events) = sse(&server, "GET", &format!("/v1/runs/{id}/events"), &inv, None).await;
    assert_eq!(events.last().unwrap().0, "run.cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the model call was abandoned, not awaited"
    );
    // It stays cancelled: the interrupted execution does not overwrite it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.get(&format!("/v1/runs/{id}"), &inv).await.body["status"],
        "cancelled"
    );

    // A waiting run: its approval is cancelled with it.
    deploy(&server, &dev, tool_agent("gated", &["mock__echo"])).await;
    let (_, body) = run(
        &server,
        &inv,
        "gated",
        json!({"input": "please mock__echo"}),
    )
    .await;
    let waiting = body["id"].as_str().unwrap().to_owned();
    let c = server
        .call(
            "POST",
            &format!("/v1/runs/{waiting}/cancel"),
            Some(&inv),
            None,
        )
        .await;
    assert_eq!(c.body["status"], "cancelled");
    let a = server
        .get(&format!("/v1/approvals?run={waiting}"), &inv)
        .await;
    assert_eq!(a.body["data"][0]["status"], "cancelled");
    // A finished run is answered as it is.
    deploy(
        &server,
        &dev,
        json!({"name": "echo", "model": {"name": "mock/echo"}}),
    )
    .await;
    let (_, body) = run(&server, &inv, "echo", json!({"input": "done"})).await;
    let fin = body["id"].as_str().unwrap();
    let c = server
        .call("POST", &format!("/v1/runs/{fin}/cancel"), Some(&inv), None)
        .await;
    assert_eq!(
        (c.status, c.body["status"].as_str()),
        (200, Some("succeeded"))
    );
    // Another tenant's run is not found.
    let other = server.create_tenant("other").await;
    let (_, stranger) = server.create_key(&other, "admin").await;
    let c = server
        .call(
            "POST",
            &format!("/v1/runs/{fin}/cancel"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(c.status, 404);
}

#[tokio::test]
async fn a_panicking_run_fails_alone_and_the_next_runs_work() {
    // One worker, so a worker lost to the panic would leave the queued run below undone.
    let server = TestServer::start_with(Backend::Sqlite, |c| c.runs.workers = 1).await;
    let (_, dev, inv) = setup(&server).await;
    deploy(
        &server,
        &dev,
        json!({"name": "boom", "model": {"name": "mock/echo"}}),
    )
    .await;
    deploy(
        &server,
        &dev,
        json!({"name": "calm", "model": {"name": "mock/echo"}}),
    )
    .await;
    berth_platform::test_hooks::panic_runs_of("boom");

    // Synchronous: the answer is the failed run, with the generic internal error.
    let (status, body) = run(&server, &inv, "boom", json!({"input": "hi"})).await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(
        (
            body["status"].as_str(),
            body["error"]["code"].as_str(),
            body["error"]["type"].as_str()
        ),
        (Some("failed"), Some("internal"), Some("internal")),
        "{body:?}"
    );
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("on purpose"),
        "the panic's text stays in the log: {body:?}"
    );
    let id = body["id"].as_str().unwrap().to_owned();
    let stored = server.get(&format!("/v1/runs/{id}"), &inv).await;
    assert_eq!(
        stored.body["status"], "failed",
        "stored as failed, not running"
    );

    // Queued: the one worker survives its panic and takes the next run.
    let (status, queued) = run(&server, &inv, "boom", json!({"input": "hi", "async": true})).await;
    assert_eq!(status, 202, "{queued:?}");
    let done = wait_run(&server, &inv, queued["id"].as_str().unwrap(), ended).await;
    assert_eq!(
        (done["status"].as_str(), done["error"]["code"].as_str()),
        (Some("failed"), Some("internal"))
    );
    let (_, next) = run(
        &server,
        &inv,
        "calm",
        json!({"input": "after", "async": true}),
    )
    .await;
    let done = wait_run(&server, &inv, next["id"].as_str().unwrap(), ended).await;
    assert_eq!(
        (done["status"].as_str(), done["output"].as_str()),
        (Some("succeeded"), Some("after"))
    );
    let (status, sync) = run(&server, &inv, "calm", json!({"input": "still here"})).await;
    assert_eq!((status, sync["status"].as_str()), (200, Some("succeeded")));
    server.stop().await;
}

/// Issue 14, item 24: a tenant whose stored policy no longer reads (a corrupt row) fails
/// its own sweep only; the sweeper goes on to the tenants after it, whose expired budget
/// holds (left by a call whose process died) are still released.
#[tokio::test]
async fn a_tenant_whose_policy_no_longer_reads_stalls_no_other_tenants_sweep() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.runs.lease = "1s".into();
    })
    .await;
    let victim = server.create_tenant("victim").await;
    let (_, victim_admin) = server.create_key(&victim, "admin").await;
    // Tenants are swept in id order: the broken one must come before the victim.
    let mut tries = 0;
    let broken = loop {
        tries += 1;
        let t = server.create_tenant(&format!("broken-{tries}")).await;
        if t < victim {
            break t;
        }
    };
    let (_, broken_admin) = server.create_key(&broken, "admin").await;
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        server.data_dir.join("berth.db").display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO policies (tenant_id, revision, document, updated_at) VALUES ($1, 1, '{not json', 0)",
    )
    .bind(&broken)
    .execute(&db)
    .await
    .unwrap();
    // A call makes the victim's budget counter; then a hold as a call whose process died
    // leaves it, long expired.
    let chat = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]});
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&victim_admin),
            Some(chat),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let summary = server.get("/v1/usage/summary", &victim_admin).await;
    let counter = summary.body["budgets"][0]["counter"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query("INSERT INTO budget_holds (tenant_id, id, budget, amount_nano, expires_at) VALUES ($1, 'hold_dead', $2, 1000000000, 0)")
        .bind(&victim)
        .bind(&counter)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE budget_counters SET reserved_nano = reserved_nano + 1000000000 WHERE tenant_id = $1 AND budget = $2")
        .bind(&victim)
        .bind(&counter)
        .execute(&db)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = server.get("/v1/usage/summary", &victim_admin).await;
        if s.body["budgets"][0]["reserved_usd"].as_f64() == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the victim's expired hold was never released: {:?}",
            s.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The broken tenant's policy really does not read, and its sweeps fail meanwhile
    // (counted, not fatal).
    let policy = server.get("/v1/policy", &broken_admin).await;
    assert!(policy.status >= 500, "{} {:?}", policy.status, policy.body);
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .bearer_auth(&server.operator_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = metrics
        .lines()
        .find(|l| l.starts_with("berth_sweep_tenant_failures_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "no failed sweep counted:\n{metrics}");
}
