//! End-to-end tests of synchronous runs of manifest agents: the built-in loop through the
//! gateway, threads, traces, version choice by split, pin and thread, and run limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_testkit::TestServer;
use serde_json::{Value, json};

async fn deploy(server: &TestServer, key: &str, agent: &str, manifest: Value) -> i64 {
    let r = server
        .call(
            "POST",
            &format!("/v1/agents/{agent}/versions"),
            Some(key),
            Some(json!({"manifest": manifest})),
        )
        .await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
    r.body["version"].as_i64().unwrap()
}

fn echo(agent: &str, system: &str) -> Value {
    json!({"name": agent, "model": {"name": "mock/echo"}, "prompt": {"system": system}})
}

#[tokio::test]
async fn a_run_answers_keeps_its_thread_and_is_traced() {
    let server = TestServer::start().await;
    let t = server.create_tenant("acme").await;
    let (_, dev) = server.create_key(&t, "developer").await;
    let (inv_id, inv) = server.create_key(&t, "invoker").await;
    deploy(
        &server,
        &dev,
        "support",
        echo("support", "You help {{tenant.name}}."),
    )
    .await;

    let r = server
        .call(
            "POST",
            "/v1/agents/support/runs",
            Some(&inv),
            Some(json!({"input": "hello there", "thread": "new"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["status"].as_str(), r.body["output"].as_str()),
        (Some("succeeded"), Some("hello there"))
    );
    assert!(r.body["id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(r.body["usage"]["llm_calls"], 1);
    assert!(r.body["usage"]["cost_usd"].as_f64().unwrap() > 0.0);
    let thread = r.body["thread"].as_str().unwrap().to_owned();
    let run_id = r.body["id"].as_str().unwrap().to_owned();

    // The trace holds the model call, with the rendered system prompt and the tokens.
    let trace = server.get(&format!("/v1/runs/{run_id}/trace"), &inv).await;
    let step = &trace.body["data"][0];
    assert_eq!(
        (step["type"].as_str(), step["model"].as_str()),
        (Some("llm_call"), Some("mock/echo"))
    );
    assert_eq!(step["request"]["system"], "You help acme.");
    assert!(step["input_tokens"].as_u64().unwrap() > 0);

    // The thread continues: the second run sees the first exchange as history.
    let r2 = server
        .call(
            "POST",
            "/v1/agents/support/runs",
            Some(&inv),
            Some(json!({"input": "and again", "thread": thread})),
        )
        .await;
    assert_eq!(r2.body["output"], "and again");
    let trace2 = server
        .get(
            &format!("/v1/runs/{}/trace", r2.body["id"].as_str().unwrap()),
            &inv,
        )
        .await;
    assert_eq!(
        trace2.body["data"][0]["request"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let th = server.get(&format!("/v1/threads/{thread}"), &inv).await;
    assert_eq!(th.body["messages"].as_array().unwrap().len(), 4);
    assert_eq!(
        th.body["messages"][0],
        json!({"role": "user", "content": "hello there"})
    );

    // Listing and reading; usage is attributed to the agent and the key.
    let runs = server.get("/v1/runs?agent=support", &inv).await;
    assert_eq!(runs.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        server
            .get(&format!("/v1/runs?thread={thread}&status=succeeded"), &dev)
            .await
            .body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (_, viewer) = server.create_key(&t, "viewer").await;
    let read = server.get(&format!("/v1/runs/{run_id}"), &viewer).await;
    assert_eq!(read.body["output"], "hello there");
    let usage = server.get("/v1/usage?group_by=agent,key", &dev).await;
    let row = usage.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent"] == "support")
        .unwrap()
        .clone();
    assert_eq!(
        (row["requests"].as_i64(), row["key"].as_str()),
        (Some(2), Some(inv_id.as_str()))
    );

    // Threads of another agent, unknown threads and deleted threads are refused.
    deploy(&server, &dev, "sales", echo("sales", "")).await;
    let r = server
        .call(
            "POST",
            "/v1/agents/sales/runs",
            Some(&inv),
            Some(json!({"input": "x", "thread": thread})),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "thread_not_found"));
    assert_eq!(
        server
            .call("DELETE", &format!("/v1/threads/{thread}"), Some(&inv), None)
            .await
            .status,
        204
    );
    assert_eq!(
        server
            .get(&format!("/v1/threads/{thread}"), &inv)
            .await
            .status,
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn version_choice_by_request_pin_split_and_thread() {
    let server = TestServer::start().await;
    let t = server.create_tenant("acme").await;
    let (_, dev) = server.create_key(&t, "developer").await;
    let (inv_id, inv) = server.create_key(&t, "invoker").await;
    deploy(&server, &dev, "bot", echo("bot", "one")).await;
    deploy(&server, &dev, "bot", echo("bot", "two")).await;
    let run = |key: String, body: Value| {
        let server = &server;
        async move {
            server
                .call("POST", "/v1/agents/bot/runs", Some(&key), Some(body))
                .await
        }
    };
    assert_eq!(
        run(inv.clone(), json!({"input": "x"})).await.body["version"],
        2,
        "promoted version serves"
    );
    // Asking for a version needs the developer role.
    assert_eq!(
        run(inv.clone(), json!({"input": "x", "version": 1}))
            .await
            .status,
        403
    );
    assert_eq!(
        run(dev.clone(), json!({"input": "x", "version": 1}))
            .await
            .body["version"],
        1
    );
    // A thread keeps the version it started on, whatever the split does next.
    let first = run(inv.clone(), json!({"input": "x", "thread": "new"})).await;
    let thread = first.body["thread"].as_str().unwrap().to_owned();
    server
        .call(
            "PUT",
            "/v1/agents/bot/traffic",
            Some(&dev),
            Some(json!({"split": [{"version": 1, "weight": 100}]})),
        )
        .await;
    assert_eq!(
        run(inv.clone(), json!({"input": "x", "thread": thread}))
            .await
            .body["version"],
        2
    );
    assert_eq!(
        run(inv.clone(), json!({"input": "x"})).await.body["version"],
        1,
        "rollback is effective on the next request"
    );
    // A pin for this key wins over the split.
    server
        .call("PUT", "/v1/agents/bot/traffic", Some(&dev), Some(json!({"split": [{"version": 1, "weight": 100}], "pins": [{"key": inv_id, "version": 2}]})))
        .await;
    assert_eq!(
        run(inv.clone(), json!({"input": "x"})).await.body["version"],
        2
    );
    assert_eq!(
        run(dev.clone(), json!({"input": "x"})).await.body["version"],
        1
    );
    // A 50/50 split sends both ways.
    server
        .call(
            "PUT",
            "/v1/agents/bot/traffic",
            Some(&dev),
            Some(json!({"split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]})),
        )
        .await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        seen.insert(
            run(dev.clone(), json!({"input": "x"})).await.body["version"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(seen.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn limits_fail_runs_with_clear_reasons_and_restricted_keys_stay_in_their_lane() {
    let server = TestServer::start().await;
    let t = server.create_tenant("acme").await;
    let (_, dev) = server.create_key(&t, "developer").await;
    // A run that costs more than its max_cost_usd fails after the call that crossed it.
    deploy(&server, &dev, "looper", json!({"name": "looper", "model": {"name": "mock/echo"}, "limits": {"max_steps": 2, "max_cost_usd": 0.000001}})).await;
    let r = server
        .call(
            "POST",
            "/v1/agents/looper/runs",
            Some(&dev),
            Some(json!({"input": "a long enough message to cost more than a micro-dollar"})),
        )
        .await;
    assert_eq!(
        (r.body["status"].as_str(), r.body["error"]["code"].as_str()),
        (Some("failed"), Some("max_cost_exceeded")),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["type"], "budget_exceeded");
    deploy(
        &server,
        &dev,
        "blocked",
        json!({"name": "blocked", "model": {"name": "mock/echo"}}),
    )
    .await;
    server
        .call(
            "PUT",
            "/v1/policy",
            Some(&server.create_key(&t, "admin").await.1),
            Some(json!({"models": {"allow": ["openai/*"]}})),
        )
        .await;
    let r = server
        .call(
            "POST",
            "/v1/agents/blocked/runs",
            Some(&dev),
            Some(json!({"input": "x"})),
        )
        .await;
    assert_eq!(
        (r.body["status"].as_str(), r.body["error"]["code"].as_str()),
        (Some("failed"), Some("model_not_allowed"))
    );
    let trace = server
        .get(
            &format!("/v1/runs/{}/trace", r.body["id"].as_str().unwrap()),
            &dev,
        )
        .await;
    assert_eq!(trace.body["data"][0]["type"], "error");
    // Bad input and unsupported modes are refused up front.
    for (body, status) in [
        (json!({"input": ""}), 422),
        (json!({"input": 5}), 422),
        (json!({"input": "x", "stream": true, "async": true}), 400),
        (json!({"input": "x", "bogus": 1}), 422),
    ] {
        assert_eq!(
            server
                .call(
                    "POST",
                    "/v1/agents/blocked/runs",
                    Some(&dev),
                    Some(body.clone())
                )
                .await
                .status,
            status,
            "{body}"
        );
    }
    assert_eq!(
        server
            .call(
                "POST",
                "/v1/agents/ghost/runs",
                Some(&dev),
                Some(json!({"input": "x"}))
            )
            .await
            .code(),
        "agent_not_found"
    );
    // A key restricted to agent A cannot run agent B.
    let admin = server.create_key(&t, "admin").await.1;
    let k = server
        .call(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(json!({"name": "l", "role": "invoker", "agent": "looper"})),
        )
        .await;
    let only_looper = k.body["key"].as_str().unwrap().to_owned();
    let r = server
        .call(
            "POST",
            "/v1/agents/blocked/runs",
            Some(&only_looper),
            Some(json!({"input": "x"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "agent_restricted_key"));
    assert_eq!(
        server
            .call(
                "POST",
                "/v1/agents/looper/runs",
                Some(&only_looper),
                Some(json!({"input": "x"}))
            )
            .await
            .status,
        200
    );
    server.stop().await;
}
