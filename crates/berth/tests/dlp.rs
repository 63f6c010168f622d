//! End-to-end tests of data-loss rules in runs: personal data in the model's answer is
//! redacted everywhere it shows (output, events, thread, trace), tool arguments holding it
//! are blocked before the tool is called, tool results are redacted before the model sees
//! them, and every hit is audited by detector name without the data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use base64::Engine;
use berth::config::ProviderConfig;
use berth_testkit::mock_llm::MockUpstream;
use berth_testkit::{Backend, TestServer};
use serde_json::{Value, json};

const SSN: &str = "123-45-6789";
const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";

async fn setup() -> (MockUpstream, TestServer, String) {
    let mock = MockUpstream::start().await;
    let url = mock.url.clone();
    let server = TestServer::start_with(Backend::Sqlite, move |c| {
        c.providers = vec![ProviderConfig {
            name: "up".into(),
            kind: "openai".into(),
            base_url: Some(url),
            api_key_env: None,
            timeout: Some("30s".into()),
            api_key: Some("sk-dlp-test".into()),
        }];
    })
    .await;
    let t = server.create_tenant("careful").await;
    let (_, key) = server.create_key(&t, "admin").await;
    (mock, server, key)
}

async fn policy(server: &TestServer, key: &str, args: &str, results: &str, output: &str) {
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(key),
            Some(json!({"dlp": {"detect": ["email", "us_ssn", "credit_card", "secret_token"],
                                "on_tool_args": args, "on_tool_results": results, "on_llm_output": output}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

async fn deploy(server: &TestServer, key: &str, name: &str, model: &str) {
    let r = server
        .call(
            "POST",
            &format!("/v1/agents/{name}/versions"),
            Some(key),
            Some(json!({"manifest": {"name": name, "model": {"name": model}, "tools": {"use": ["mock__echo"]}}})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

fn args_model(args: Value) -> String {
    format!(
        "up/tools-args-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(args.to_string())
    )
}

#[tokio::test]
async fn model_output_is_redacted_everywhere_and_hits_are_audited_without_the_data() {
    let (_mock, server, key) = setup().await;
    policy(&server, &key, "allow", "allow", "redact").await;
    deploy(&server, &key, "echo", "mock/echo").await;
    let input = format!("my ssn is {SSN}, mail {EMAIL}");
    let r = server
        .call(
            "POST",
            "/v1/agents/echo/runs",
            Some(&key),
            Some(json!({"input": input, "thread": "new"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["output"],
        "my ssn is [REDACTED:us_ssn], mail [REDACTED:email]"
    );
    let id = r.body["id"].as_str().unwrap();
    let raw = server
        .http
        .get(format!("{}/v1/runs/{id}/events", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        raw.contains("[REDACTED:us_ssn]") && !raw.contains(SSN),
        "{raw}"
    );
    let thread = server
        .get(
            &format!("/v1/threads/{}", r.body["thread"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(
        thread.body["messages"][1]["content"],
        "my ssn is [REDACTED:us_ssn], mail [REDACTED:email]"
    );
    let trace = server.get(&format!("/v1/runs/{id}/trace"), &key).await;
    let dlp = trace.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "dlp")
        .unwrap()
        .clone();
    assert_eq!(dlp["on"], "llm_output");
    assert_eq!(dlp["detectors"], json!(["email", "us_ssn"]));
    let audit = server
        .get("/v1/audit?limit=500", &key)
        .await
        .body
        .to_string();
    assert!(
        audit.contains("dlp.hit") && audit.contains("us_ssn"),
        "{audit}"
    );
    assert!(
        !audit.contains(SSN) && !audit.contains(EMAIL),
        "the audit log never holds the data"
    );

    // Blocking model output fails the run with a clear code.
    policy(&server, &key, "allow", "allow", "block").await;
    let r = server
        .call(
            "POST",
            "/v1/agents/echo/runs",
            Some(&key),
            Some(json!({"input": input})),
        )
        .await;
    assert_eq!(r.body["status"], "failed");
    assert_eq!(r.body["error"]["code"], "dlp_blocked");
    assert!(!r.body.to_string().contains(SSN));
}

#[tokio::test]
async fn tool_arguments_are_blocked_and_tool_results_redacted() {
    let (_mock, server, key) = setup().await;
    // Arguments holding an email: the tool is never called.
    policy(&server, &key, "block", "allow", "allow").await;
    deploy(&server, &key, "mailer", &args_model(json!({"to": EMAIL}))).await;
    let r = server
        .call(
            "POST",
            "/v1/agents/mailer/runs",
            Some(&key),
            Some(json!({"input": "send it"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["usage"]["tool_calls"], 0,
        "the tool was not called: {:?}",
        r.body
    );
    let trace = server
        .get(
            &format!("/v1/runs/{}/trace", r.body["id"].as_str().unwrap()),
            &key,
        )
        .await;
    let call = trace.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "tool_call")
        .unwrap()
        .clone();
    assert!(
        call["error"]
            .as_str()
            .unwrap()
            .contains("blocked by the data-loss rules"),
        "{call}"
    );
    assert_eq!(
        call["arguments"], "[BLOCKED]",
        "the trace shows nothing of the blocked arguments"
    );

    // A card number in the tool's result is redacted before the model sees it.
    policy(&server, &key, "allow", "redact", "allow").await;
    deploy(&server, &key, "payer", &args_model(json!({"card": CARD}))).await;
    let r = server
        .call(
            "POST",
            "/v1/agents/payer/runs",
            Some(&key),
            Some(json!({"input": "pay"})),
        )
        .await;
    assert_eq!(r.body["usage"]["tool_calls"], 1);
    let out = r.body["output"].as_str().unwrap();
    assert!(
        out.contains("[REDACTED:credit_card]") && !out.contains(CARD),
        "{out}"
    );
}

#[tokio::test]
async fn gateway_answers_outside_runs_are_screened_too() {
    let (_mock, server, key) = setup().await;
    policy(&server, &key, "allow", "allow", "redact").await;
    let ask = |content: String| json!({"model": "mock/echo", "messages": [{"role": "user", "content": content}]});
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(ask(format!("mail {EMAIL} now"))),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let text = r.body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.contains("[REDACTED:email]") && !text.contains(EMAIL),
        "{text}"
    );
    let r = server
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(json!({"model": "mock/echo", "max_tokens": 100,
                        "messages": [{"role": "user", "content": format!("ssn {SSN}")}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!r.body.to_string().contains(SSN), "{:?}", r.body);

    policy(&server, &key, "allow", "allow", "block").await;
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(ask(format!("card {CARD}"))),
        )
        .await;
    assert_eq!(r.body["error"]["code"], "dlp_blocked", "{:?}", r.body);
    assert!(!r.body.to_string().contains(CARD));
    let (hits, audit) = gateway_hits(&server, &key).await;
    assert_eq!(hits.len(), 3, "{audit}");
    assert!(!audit.contains(EMAIL));
    server.stop().await;
}

/// The tenant's `dlp.hit` audit entries of gateway calls, and the whole audit answer.
async fn gateway_hits(server: &TestServer, key: &str) -> (Vec<Value>, String) {
    let audit = server.get("/v1/audit?limit=500", key).await;
    let hits = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "dlp.hit" && e["details"]["via"] == "gateway")
        .cloned()
        .collect();
    (hits, audit.body.to_string())
}

/// The text of an SSE answer on either wire, and the whole body.
async fn streamed(server: &TestServer, key: &str, path: &str, body: Value) -> (String, String) {
    let resp = server
        .http
        .post(format!("{}{path}", server.url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sse = resp.text().await.unwrap();
    let text = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .or(v["delta"]["text"].as_str())
                .map(str::to_owned)
        })
        .collect();
    (text, sse)
}

#[tokio::test]
async fn streamed_gateway_answers_are_screened_as_they_go() {
    let (_mock, server, key) = setup().await;
    // The mock streams word by word: the card number arrives in four pieces, after more
    // than the screen holds back.
    let filler = "the quick brown fox jumps over the lazy dog again and again ".repeat(8);
    let content = format!("{filler}card {CARD} mail {EMAIL} end");
    let ask = |stream_path: &str| {
        if stream_path == "/v1/messages" {
            json!({"model": "mock/echo", "max_tokens": 1000, "stream": true,
                   "messages": [{"role": "user", "content": content}]})
        } else {
            json!({"model": "mock/echo", "stream": true,
                   "messages": [{"role": "user", "content": content}]})
        }
    };
    policy(&server, &key, "allow", "allow", "redact").await;
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let (text, sse) = streamed(&server, &key, path, ask(path)).await;
        assert!(
            text.contains("card [REDACTED:credit_card] mail [REDACTED:email] end"),
            "{path}: {text}"
        );
        assert!(text.contains(filler.trim()), "{path}: {text}");
        assert!(
            !sse.contains("4111") && !sse.contains(EMAIL),
            "{path}: {sse}"
        );
    }

    policy(&server, &key, "allow", "allow", "block").await;
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let (text, sse) = streamed(&server, &key, path, ask(path)).await;
        assert!(sse.contains("dlp_blocked"), "{path}: {sse}");
        assert!(
            !sse.contains("4111") && !sse.contains(EMAIL),
            "{path}: {sse}"
        );
        // What lay far enough before the card was sent before the stream stopped.
        assert!(text.starts_with("the quick brown fox"), "{path}: {text}");
        assert!(!text.contains("card"), "{path}: {text}");
    }

    let (hits, audit) = gateway_hits(&server, &key).await;
    let actions: Vec<&str> = hits
        .iter()
        .map(|e| e["details"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["redact", "redact", "block", "block"], "{hits:?}");
    assert_eq!(
        hits[0]["details"]["detectors"],
        json!(["credit_card", "email"])
    );
    assert!(!audit.contains(EMAIL));
    server.stop().await;
}

#[tokio::test]
async fn arguments_of_a_call_that_waits_for_approval_are_screened_before_they_are_kept() {
    let (_mock, server, key) = setup().await;
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&key),
            Some(
                json!({"dlp": {"detect": ["email"], "on_tool_args": "redact"},
                        "tools": {"approval": ["mock__echo"]}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    deploy(&server, &key, "gated", &args_model(json!({"to": EMAIL}))).await;
    let r = server
        .call(
            "POST",
            "/v1/agents/gated/runs",
            Some(&key),
            Some(json!({"input": "send it", "thread": "new"})),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["status"], "waiting_approval");
    let id = r.body["id"].as_str().unwrap().to_owned();

    // The approval a reviewer sees holds the redacted arguments.
    let pending = server.get("/v1/approvals?status=pending", &key).await;
    let approval = pending.body["data"][0].clone();
    assert_eq!(approval["tool"], "mock__echo", "{:?}", pending.body);
    assert_eq!(
        approval["arguments"]["to"], "[REDACTED:email]",
        "{approval}"
    );
    // Nor do the trace or the events of the paused run show the address.
    let trace = server.get(&format!("/v1/runs/{id}/trace"), &key).await;
    let text = trace.body.to_string();
    assert!(
        !text.contains(EMAIL) && text.contains("[REDACTED:email]"),
        "{text}"
    );
    let events = |id: String| {
        let (http, url, key) = (server.http.clone(), server.url.clone(), key.clone());
        async move {
            http.get(format!("{url}/v1/runs/{id}/events"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let apr = approval["id"].as_str().unwrap();
    let ok = server
        .call(
            "POST",
            &format!("/v1/approvals/{apr}"),
            Some(&key),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let mut done = Value::Null;
    for _ in 0..100 {
        done = server.get(&format!("/v1/runs/{id}"), &key).await.body;
        if done["status"] != "waiting_approval"
            && done["status"] != "queued"
            && done["status"] != "running"
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(done["status"], "succeeded", "{done}");
    // The tool got what the reviewer saw; nothing anywhere holds the address.
    let output = done["output"].as_str().unwrap();
    assert!(
        output.contains("[REDACTED:email]") && !output.contains(EMAIL),
        "{output}"
    );
    let raw = events(id.clone()).await;
    assert!(
        raw.contains("approval.required") && !raw.contains(EMAIL),
        "{raw}"
    );
    let trace = server.get(&format!("/v1/runs/{id}/trace"), &key).await;
    assert!(!trace.body.to_string().contains(EMAIL), "{}", trace.body);
    let thread = server
        .get(
            &format!("/v1/threads/{}", done["thread"].as_str().unwrap()),
            &key,
        )
        .await;
    assert!(!thread.body.to_string().contains(EMAIL), "{}", thread.body);
    let approvals = server.get("/v1/approvals", &key).await;
    assert!(
        !approvals.body.to_string().contains(EMAIL),
        "{}",
        approvals.body
    );
}

/// Issue 14, item 17: a custom pattern that would make screening cost thousands of steps
/// per byte is refused when the policy is written, naming the field; a heavy screening
/// that is allowed runs off the async workers, so `/healthz` and another tenant's calls
/// answer at once meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_custom_patterns_are_refused_and_heavy_screens_stall_no_one() {
    let (_mock, server, key) = setup().await;
    let put = |dlp: Value| {
        let (server, key) = (&server, &key);
        async move {
            server
                .call("PUT", "/v1/policy", Some(key), Some(json!({ "dlp": dlp })))
                .await
        }
    };
    let r = put(
        json!({"custom": [{"name": "bomb", "regex": ".*".repeat(5000)}],
                       "on_llm_output": "redact"}),
    )
    .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["error"]["param"], "dlp.custom[0].regex");
    let r = put(json!({"custom": [{"name": "bomb", "regex": ".*".repeat(300)}]})).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("compiles to more than"),
        "{:?}",
        r.body
    );
    let many: Vec<Value> = (0..33)
        .map(|i| json!({"name": format!("d{i}"), "regex": "x"}))
        .collect();
    let r = put(json!({ "custom": many })).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["error"]["param"], "dlp.custom");

    // The heaviest policy that is allowed, over a 480 KB answer.
    let heavy: Vec<Value> = (0..32)
        .map(|i| json!({"name": format!("h{i}"), "regex": format!("{}Z{i}Q", ".*".repeat(60))}))
        .collect();
    let r = put(json!({"custom": heavy, "on_llm_output": "redact"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let other = server.create_tenant("bystander").await;
    let (_, other_key) = server.create_key(&other, "admin").await;
    let big = "lorem ipsum dolor sit amet\n".repeat(480_000 / 27);
    let heavy_call = {
        let (http, url, key) = (server.http.clone(), server.url.clone(), key.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "mock/echo", "max_tokens": 400_000,
                              "messages": [{"role": "user", "content": big}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let h = server.call("GET", "/healthz", None, None).await;
        assert_eq!(h.status, 200);
        let g = server
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&other_key),
                Some(
                    json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}),
                ),
            )
            .await;
        assert_eq!(g.status, 200, "{:?}", g.body);
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "others waited {:?}",
            started.elapsed()
        );
    }
    // The heavy answer is screened (within the budget) or withheld, never passed unscreened.
    let status = heavy_call.await.unwrap();
    assert!(status == 200 || status == 400, "{status}");
}
