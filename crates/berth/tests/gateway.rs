//! End-to-end tests of the LLM gateway: both client wires against both provider wires,
//! streaming, tools, routing, fallbacks, retries, timeouts, BYOK isolation, exact usage for
//! finished, failed, interrupted and abandoned calls, and bad upstreams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth::config::ProviderConfig;
use berth_testkit::mock_llm::MockUpstream;
use berth_testkit::{Backend, TestServer};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

fn provider(name: &str, kind: &str, url: &str, key: &str, timeout: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind: kind.into(),
        base_url: Some(url.into()),
        api_key_env: None,
        timeout: Some(timeout.into()),
        api_key: Some(key.into()),
    }
}

const PLATFORM_OPENAI_KEY: &str = "sk-platform-openai-key-0123456789";
const PLATFORM_ANTHROPIC_KEY: &str = "sk-ant-platform-key-0123456789";

/// A server whose platform providers `up` (OpenAI wire) and `anth` (Anthropic wire) both
/// point at one mock upstream.
async fn server_with(mock: &MockUpstream, timeout: &str) -> TestServer {
    let (url, timeout) = (mock.url.clone(), timeout.to_owned());
    TestServer::start_with(Backend::Sqlite, move |c| {
        c.providers = vec![
            provider("up", "openai", &url, PLATFORM_OPENAI_KEY, &timeout),
            provider("anth", "anthropic", &url, PLATFORM_ANTHROPIC_KEY, &timeout),
        ];
        c.egress.allow_private = vec!["127.0.0.0/8".into()];
    })
    .await
}

async fn tenant(server: &TestServer, name: &str) -> String {
    let id = server.create_tenant(name).await;
    server.create_key(&id, "admin").await.1
}

async fn usage(server: &TestServer, key: &str, group_by: &str) -> Vec<Value> {
    let r = server
        .get(&format!("/v1/usage?group_by={group_by}"), key)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["data"].as_array().unwrap().clone()
}

/// Reads an SSE answer to the end; returns the raw text.
async fn sse_text(
    server: &TestServer,
    path: &str,
    key: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = server
        .http
        .post(format!("{}{}", server.url, path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn openai_stream_text(sse: &str) -> String {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

fn anthropic_stream_text(sse: &str) -> String {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "content_block_delta")
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn both_wires_reach_both_provider_kinds() {
    let mock = MockUpstream::start().await;
    let server = server_with(&mock, "10s").await;
    let key = tenant(&server, "acme").await;
    let openai_body = |model: &str| json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]});
    let anthropic_body = |model: &str| json!({"model": model, "max_tokens": 50, "system": "be brief", "messages": [{"role": "user", "content": "hello there"}]});

    for model in ["up/gpt-4o-mini", "anth/claude-haiku-4-5"] {
        // OpenAI client.
        let r = server
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&key),
                Some(openai_body(model)),
            )
            .await;
        assert_eq!(r.status, 200, "{model}: {:?}", r.body);
        assert_eq!(
            r.body["choices"][0]["message"]["content"],
            "echo: hello there"
        );
        assert_eq!(r.body["model"], model);
        assert!(r.body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        let provider = model.split('/').next().unwrap();
        assert_eq!(r.headers["x-berth-provider"], provider);
        let cost: f64 = r.headers["x-berth-cost-usd"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(cost > 0.0, "{model} cost {cost}");
        // The provider key went to the upstream, in that provider's header.
        if provider == "up" {
            assert_eq!(
                mock.seen.last_authorization.lock().unwrap().as_deref(),
                Some(format!("Bearer {PLATFORM_OPENAI_KEY}").as_str())
            );
        } else {
            assert_eq!(
                mock.seen.last_api_key.lock().unwrap().as_deref(),
                Some(PLATFORM_ANTHROPIC_KEY)
            );
            // And the Anthropic upstream got an Anthropic body: system apart, max_tokens set.
            let seen = mock.seen.last_body.lock().unwrap().clone().unwrap();
            assert_eq!(seen["system"], "be brief");
            assert_eq!(seen["model"], "claude-haiku-4-5");
            assert!(seen["max_tokens"].is_u64());
        }
        // Anthropic client.
        let r = server
            .call(
                "POST",
                "/v1/messages",
                Some(&key),
                Some(anthropic_body(model)),
            )
            .await;
        assert_eq!(r.status, 200, "{model}: {:?}", r.body);
        assert_eq!(r.body["type"], "message");
        assert_eq!(r.body["content"][0]["text"], "echo: hello there");
        assert!(r.body["usage"]["output_tokens"].as_u64().unwrap() > 0);
        // Streams, both ways.
        let mut sb = openai_body(model);
        sb["stream"] = json!(true);
        sb["stream_options"] = json!({"include_usage": true});
        let (status, headers, text) = sse_text(&server, "/v1/chat/completions", &key, sb).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(openai_stream_text(&text), "echo: hello there", "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
        let usage_chunk: Value = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v["usage"].is_object())
            .unwrap();
        assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
        assert!(usage_chunk["berth"]["cost_usd"].as_f64().unwrap() > 0.0);
        let mut ab = anthropic_body(model);
        ab["stream"] = json!(true);
        let (status, _, text) = sse_text(&server, "/v1/messages", &key, ab).await;
        assert_eq!(status, 200);
        assert_eq!(anthropic_stream_text(&text), "echo: hello there", "{text}");
        assert!(text.contains("event: message_stop"));
    }
    // Eight calls, each recorded once, none at zero cost, by provider.
    let rows = usage(&server, &key, "provider").await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["requests"], 4, "{row}");
        assert!(row["cost_usd"].as_f64().unwrap() > 0.0);
        assert!(row["output_tokens"].as_i64().unwrap() > 0);
    }
    server.stop().await;
}

#[tokio::test]
async fn tool_calls_translate_across_wires() {
    let mock = MockUpstream::start().await;
    let server = server_with(&mock, "10s").await;
    let key = tenant(&server, "acme").await;
    let tools = json!([{"type": "function", "function": {"name": "lookup", "description": "find", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    // OpenAI client → Anthropic upstream: the tool call comes back as OpenAI tool_calls.
    let r = server
        .call("POST", "/v1/chat/completions", Some(&key), Some(json!({"model": "anth/tools-model", "messages": [{"role": "user", "content": "use lookup"}], "tools": tools})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let call = &r.body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(
        (
            call["function"]["name"].as_str(),
            r.body["choices"][0]["finish_reason"].as_str()
        ),
        (Some("lookup"), Some("tool_calls"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"q": "mock"})
    );
    let seen = mock.seen.last_body.lock().unwrap().clone().unwrap();
    assert_eq!(
        seen["tools"][0]["input_schema"]["properties"]["q"]["type"],
        "string"
    );
    // Anthropic client → OpenAI upstream, streamed: tool_use blocks with input_json_delta.
    let (status, _, text) = sse_text(
        &server,
        "/v1/messages",
        &key,
        json!({"model": "up/tools-model", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "use lookup"}],
               "tools": [{"name": "lookup", "input_schema": {"type": "object"}}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        text.contains("\"type\":\"tool_use\"")
            && text.contains("input_json_delta")
            && text.contains("\"stop_reason\":\"tool_use\""),
        "{text}"
    );
    // The built-in mock provider asks for the tools named in the message.
    let r = server
        .call("POST", "/v1/chat/completions", Some(&key), Some(json!({"model": "mock/tools", "messages": [{"role": "user", "content": "please lookup"}], "tools": tools})))
        .await;
    assert_eq!(
        r.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );
    server.stop().await;
}

#[tokio::test]
async fn routing_aliases_tags_allow_list_and_fallbacks() {
    let mock = MockUpstream::start().await;
    let server = server_with(&mock, "10s").await;
    let key = tenant(&server, "acme").await;
    let policy = json!({"models": {
        "allow": ["up/*", "mock/*", "ghost/*"],
        "aliases": {"fast": "mock/echo", "flaky": "up/error-500"},
        "fallbacks": {"flaky": ["anth/never-allowed", "up/gpt-4o-mini"], "up/error-429": ["mock/echo"]},
        "routes": [{"tag": "classify", "model": "fast"}]
    }});
    assert_eq!(
        server
            .call("PUT", "/v1/policy", Some(&key), Some(policy))
            .await
            .status,
        200
    );
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "ping"}]});

    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("fast")),
        )
        .await;
    assert_eq!(
        (r.status, r.headers["x-berth-provider"].to_str().unwrap()),
        (200, "mock")
    );
    // A tag's route wins over the requested model.
    let resp = server
        .http
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&key)
        .header("Berth-Tags", "x, classify")
        .json(&chat("up/gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-berth-provider"], "mock");
    // Outside the allow-list: refused before any upstream call.
    let before = mock.requests();
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("anth/claude-haiku-4-5")),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "model_not_allowed"));
    assert_eq!(mock.requests(), before);
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("gpt-4o")),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "model_not_found"));
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("ghost/model")),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "model_not_found"));
    // 5xx: retried, then the allowed fallback answers (the disallowed one is skipped).
    let before = mock.requests();
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("flaky")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["model"], "up/gpt-4o-mini");
    assert_eq!(
        mock.requests() - before,
        3,
        "two attempts at error-500, then the fallback"
    );
    // 429: falls back too, also for streams.
    let mut s = chat("up/error-429");
    s["stream"] = json!(true);
    let (status, headers, text) = sse_text(&server, "/v1/chat/completions", &key, s).await;
    assert_eq!(
        (status, headers["x-berth-provider"].to_str().unwrap()),
        (200, "mock")
    );
    assert_eq!(openai_stream_text(&text), "ping");
    // /v1/models lists only what the policy allows, aliases included.
    let models = server.get("/v1/models", &key).await.body.to_string();
    assert!(
        models.contains("\"mock/echo\"")
            && models.contains("\"fast\"")
            && !models.contains("anth/"),
        "{models}"
    );
    server.stop().await;
}

#[tokio::test]
async fn upstream_failures_are_contained_and_never_leak_keys() {
    let mock = MockUpstream::start().await;
    let server = server_with(&mock, "1s").await;
    let key = tenant(&server, "acme").await;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
    // A 429 with no fallback: the SDK-visible 429 with Retry-After.
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("up/error-429")),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["type"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(r.headers.contains_key("retry-after"));
    // The provider rejects the platform key and echoes it: the caller sees neither a 401
    // (their own key is fine) nor the provider key.
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let model = if path == "/v1/messages" {
            "anth/error-401"
        } else {
            "up/error-401"
        };
        let mut body = chat(model);
        body["max_tokens"] = json!(5);
        let r = server.call("POST", path, Some(&key), Some(body)).await;
        assert_eq!(
            (r.status, r.code()),
            (502, "upstream_auth_failed"),
            "{:?}",
            r.body
        );
        let text = r.body.to_string();
        assert!(!text.contains("0123456789"), "key leaked: {text}");
    }
    // Invalid JSON, timeouts, 5xx after retries.
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("up/garbage")),
        )
        .await;
    assert_eq!((r.status, r.code()), (502, "upstream_invalid_answer"));
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("up/hang")),
        )
        .await;
    assert_eq!((r.status, r.code()), (504, "upstream_timeout"));
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("up/error-500")),
        )
        .await;
    assert_eq!((r.status, r.code()), (502, "upstream_error"));
    // A broken SSE stream ends with an in-band error, and is still charged.
    let mut s = chat("up/broken-sse");
    s["stream"] = json!(true);
    let (status, _, text) = sse_text(&server, "/v1/chat/completions", &key, s).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"error\""), "{text}");
    // Bad client input.
    for (body, param) in [
        (json!({"messages": []}), "model"),
        (json!({"model": "mock/echo"}), "messages"),
        (
            json!({"model": "mock/echo", "messages": [{"role": "x"}]}),
            "messages[0].role",
        ),
    ] {
        let r = server
            .call("POST", "/v1/chat/completions", Some(&key), Some(body))
            .await;
        assert_eq!(
            (r.status, r.body["error"]["param"].as_str()),
            (400, Some(param))
        );
    }
    let r = server
        .http
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing in the usage log mentions a key either, and the server still answers.
    let rows = usage(&server, &key, "model").await;
    assert!(!serde_json::to_string(&rows).unwrap().contains("0123456789"));
    assert_eq!(
        server
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&key),
                Some(chat("mock/echo"))
            )
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn every_stream_is_charged_finished_broken_abandoned_or_unreported() {
    // Slow chunks so the client can leave in the middle.
    let mock = MockUpstream::start_with(Duration::from_millis(400), "127.0.0.1:0").await;
    let server = server_with(&mock, "10s").await;
    let key = tenant(&server, "acme").await;
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let body = |model: &str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": long}]});

    // The upstream drops the connection after a few chunks.
    let (status, _, text) = sse_text(
        &server,
        "/v1/chat/completions",
        &key,
        body("up/gpt-4o-mini-drop"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("\"error\""), "{text}");
    // The upstream reports no usage at all.
    let (_, _, text) = sse_text(
        &server,
        "/v1/chat/completions",
        &key,
        body("up/gpt-4o-mini-no-usage"),
    )
    .await;
    assert!(text.ends_with("data: [DONE]\n\n"));
    // The client reads one chunk and goes away.
    let resp = server
        .http
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&key)
        .json(&body("up/gpt-4o-mini-abandoned"))
        .send()
        .await
        .unwrap();
    let mut bytes = resp.bytes_stream();
    let first = bytes.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(bytes);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let rows = usage(&server, &key, "model").await;
    let find = |m: &str| {
        rows.iter()
            .find(|r| r["model"] == m)
            .unwrap_or_else(|| panic!("no usage for {m}: {rows:?}"))
            .clone()
    };
    for m in [
        "up/gpt-4o-mini-drop",
        "up/gpt-4o-mini-no-usage",
        "up/gpt-4o-mini-abandoned",
    ] {
        let row = find(m);
        assert_eq!(row["requests"], 1, "{m} counted once: {row}");
        assert!(row["input_tokens"].as_i64().unwrap() > 0, "{m}: {row}");
        assert!(
            row["output_tokens"].as_i64().unwrap() > 0,
            "{m} charged as zero: {row}"
        );
        // Priced by the test server's default price (a suffixed id is not its base model).
        assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "{m}: {row}");
    }
    server.stop().await;
}

#[tokio::test]
async fn byok_keys_stay_with_their_tenant() {
    let mock = MockUpstream::start().await;
    let server = server_with(&mock, "10s").await;
    let a = tenant(&server, "tenant-a").await;
    let b = tenant(&server, "tenant-b").await;
    let a_key = "sk-tenant-a-own-key-AAAAAAAAAAAA";
    let b_key = "sk-tenant-b-own-key-BBBBBBBBBBBB";
    for (admin, secret) in [(&a, a_key), (&b, b_key)] {
        server
            .call(
                "PUT",
                "/v1/secrets/MY_KEY",
                Some(admin),
                Some(json!({"value": secret})),
            )
            .await;
    }
    let r = server
        .call("PUT", "/v1/providers/mine", Some(&a), Some(json!({"kind": "openai-compatible", "base_url": mock.url, "api_key_secret": "MY_KEY"})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let chat = json!({"model": "mine/llama-3", "messages": [{"role": "user", "content": "hi"}]});
    let r = server
        .call("POST", "/v1/chat/completions", Some(&a), Some(chat.clone()))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.headers["x-berth-provider"], "mine");
    assert_eq!(
        mock.seen.last_authorization.lock().unwrap().as_deref(),
        Some(format!("Bearer {a_key}").as_str())
    );
    assert_eq!(
        mock.seen.last_body.lock().unwrap().clone().unwrap()["model"],
        "llama-3"
    );
    // Tenant B has no provider "mine": A's is invisible to it, and A's key is never used.
    let before = mock.requests();
    let r = server
        .call("POST", "/v1/chat/completions", Some(&b), Some(chat.clone()))
        .await;
    assert_eq!((r.status, r.code()), (404, "model_not_found"));
    assert_eq!(mock.requests(), before);
    // B's own provider of the same name uses B's key.
    server
        .call("PUT", "/v1/providers/mine", Some(&b), Some(json!({"kind": "openai-compatible", "base_url": mock.url, "api_key_secret": "MY_KEY"})))
        .await;
    assert_eq!(
        server
            .call("POST", "/v1/chat/completions", Some(&b), Some(chat.clone()))
            .await
            .status,
        200
    );
    assert_eq!(
        mock.seen.last_authorization.lock().unwrap().as_deref(),
        Some(format!("Bearer {b_key}").as_str())
    );
    // A rotated secret is used from the next call on; a deleted one fails clearly.
    server
        .call(
            "PUT",
            "/v1/secrets/MY_KEY",
            Some(&a),
            Some(json!({"value": "sk-rotated-a-key-CCCCCCCC"})),
        )
        .await;
    server
        .call("POST", "/v1/chat/completions", Some(&a), Some(chat.clone()))
        .await;
    assert_eq!(
        mock.seen.last_authorization.lock().unwrap().as_deref(),
        Some("Bearer sk-rotated-a-key-CCCCCCCC")
    );
    server
        .call("DELETE", "/v1/secrets/MY_KEY", Some(&a), None)
        .await;
    let r = server
        .call("POST", "/v1/chat/completions", Some(&a), Some(chat))
        .await;
    assert_eq!((r.status, r.code()), (422, "provider_key_missing"));
    server.stop().await;
}

#[tokio::test]
async fn byok_base_urls_are_rechecked_at_call_time() {
    // The tenant registered a provider while loopback was allowed; the operator then
    // removed that permission. Calls are refused at connection time, not only at PUT.
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data2 = data.clone();
    let server = TestServer::start_with(Backend::Sqlite, move |c| {
        c.egress.allow_private = vec!["127.0.0.0/8".into()];
        c.data_dir = data2;
    })
    .await;
    let key = tenant(&server, "acme").await;
    server
        .call(
            "PUT",
            "/v1/secrets/K",
            Some(&key),
            Some(json!({"value": "sk-x-123456789"})),
        )
        .await;
    let r = server
        .call(
            "PUT",
            "/v1/providers/local",
            Some(&key),
            Some(json!({"kind": "openai-compatible", "base_url": mock.url, "api_key_secret": "K"})),
        )
        .await;
    assert_eq!(r.status, 200);
    server.stop().await;
    let server = TestServer::start_with(Backend::Sqlite, move |c| c.data_dir = data).await;
    let before = mock.requests();
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(json!({"model": "local/m", "messages": [{"role": "user", "content": "x"}]})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (502, "upstream_unreachable"),
        "{:?}",
        r.body
    );
    assert_eq!(mock.requests(), before);
    server.stop().await;
}

#[tokio::test]
async fn usage_is_attributed_by_agent_key_and_tags() {
    let server = TestServer::start().await;
    let id = server.create_tenant("acme").await;
    let (key_id, key) = server.create_key(&id, "invoker").await;
    let (_, admin) = server.create_key(&id, "admin").await;
    for agent in ["support", "support", "sales"] {
        let resp = server
            .http
            .post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth(&key)
            .header("Berth-Agent", agent)
            .header("Berth-Tags", "a,b")
            .json(
                &json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hello"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let emb = server
        .call(
            "POST",
            "/v1/embeddings",
            Some(&key),
            Some(json!({"model": "mock/embed", "input": ["a", "b"]})),
        )
        .await;
    assert_eq!(emb.body["data"].as_array().unwrap().len(), 2);
    let rows = usage(&server, &admin, "agent,key").await;
    let support = rows.iter().find(|r| r["agent"] == "support").unwrap();
    assert_eq!(
        (support["requests"].as_i64(), support["key"].as_str()),
        (Some(2), Some(key_id.as_str()))
    );
    assert_eq!(
        rows.iter().find(|r| r["agent"] == "sales").unwrap()["requests"],
        1
    );
    // Exact cost: mock/echo is $1/M input and $2/M output; "hello" is 2 tokens in
    // (4 per message + 2 text) = 6 input, 2 output → 6·1000 + 2·2000 = 10000 nano-USD.
    let by_model = usage(&server, &admin, "model").await;
    let echo = by_model.iter().find(|r| r["model"] == "mock/echo").unwrap();
    assert!(
        (echo["cost_usd"].as_f64().unwrap() - 30_000e-9).abs() < 1e-15,
        "{echo}"
    );
    // The operator sees every tenant's usage, each row with its tenant.
    let other = server.create_tenant("other").await;
    let other_key = server.create_key(&other, "invoker").await.1;
    server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&other_key),
            Some(json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x"}]})),
        )
        .await;
    let all = server
        .call(
            "GET",
            "/v1/admin/usage?group_by=model",
            Some(berth_testkit::OPERATOR_TOKEN),
            None,
        )
        .await;
    let rows = all.body["data"].as_array().unwrap();
    let for_tenant = |t: &str| {
        rows.iter()
            .filter(|r| r["tenant"] == t)
            .map(|r| r["requests"].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!((for_tenant(&id), for_tenant(&other)), (4, 1), "{rows:?}");
    assert_eq!(server.get("/v1/admin/usage", &admin).await.status, 403);
    // A bad Berth-Agent is refused.
    let resp = server
        .http
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&key)
        .header("Berth-Agent", "Not An Agent")
        .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn requests_per_minute_are_limited_per_tenant_with_headers() {
    let server = TestServer::start().await;
    let a = tenant(&server, "limited").await;
    let b = tenant(&server, "neighbour").await;
    // The policy asks for 600/min, the free plan caps it at 60; then a stricter 3/min.
    server
        .call(
            "PUT",
            "/v1/policy",
            Some(&a),
            Some(json!({"limits": {"requests_per_minute": 600}})),
        )
        .await;
    let chat = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x"}]});
    let r = server
        .call("POST", "/v1/chat/completions", Some(&a), Some(chat.clone()))
        .await;
    assert_eq!(r.headers["x-ratelimit-limit-requests"], "60");
    server
        .call(
            "PUT",
            "/v1/policy",
            Some(&a),
            Some(json!({"limits": {"requests_per_minute": 3}})),
        )
        .await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = server
            .call("POST", "/v1/chat/completions", Some(&a), Some(chat.clone()))
            .await;
        if r.status == 200 {
            remaining.push(
                r.headers["x-ratelimit-remaining-requests"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    // One of the three slots was taken by the first call (GCRA keeps its history).
    assert_eq!(remaining.len(), 2, "{remaining:?}");
    let refused = server
        .call("POST", "/v1/chat/completions", Some(&a), Some(chat.clone()))
        .await;
    assert_eq!(
        (refused.status, refused.body["error"]["type"].as_str()),
        (429, Some("rate_limited"))
    );
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(refused.headers["x-ratelimit-remaining-requests"], "0");
    // Streams and embeddings count too; the neighbour is unaffected.
    let r = server
        .call(
            "POST",
            "/v1/embeddings",
            Some(&a),
            Some(json!({"model": "mock/embed", "input": "x"})),
        )
        .await;
    assert_eq!(r.status, 429);
    for _ in 0..5 {
        assert_eq!(
            server
                .call("POST", "/v1/chat/completions", Some(&b), Some(chat.clone()))
                .await
                .status,
            200
        );
    }
    server.stop().await;
}

/// A tenant of `plan` and its admin key.
async fn tenant_on(server: &TestServer, name: &str, plan: &str) -> String {
    let t = server
        .call(
            "POST",
            "/v1/tenants",
            Some(berth_testkit::OPERATOR_TOKEN),
            Some(json!({"name": name, "plan": plan})),
        )
        .await;
    assert_eq!(t.status, 201, "{:?}", t.body);
    server
        .create_key(t.body["id"].as_str().unwrap(), "admin")
        .await
        .1
}

/// Registers the tenant's own provider `name` (`kind`) at the mock, with `key` as its secret.
async fn own_provider(
    server: &TestServer,
    admin: &str,
    name: &str,
    kind: &str,
    url: &str,
    key: &str,
) {
    let secret = format!("{}_KEY", name.to_uppercase());
    let r = server
        .call(
            "PUT",
            &format!("/v1/secrets/{secret}"),
            Some(admin),
            Some(json!({"value": key})),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = server
        .call(
            "PUT",
            &format!("/v1/providers/{name}"),
            Some(admin),
            Some(json!({"kind": kind, "base_url": url, "api_key_secret": secret})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

#[tokio::test]
async fn unknown_names_are_unpriced_and_refused_under_hard_budgets_whatever_the_provider() {
    let mock = MockUpstream::start().await;
    let url = mock.url.clone();
    let server = TestServer::start_with(Backend::Sqlite, move |c| {
        c.providers = vec![provider("up", "openai", &url, PLATFORM_OPENAI_KEY, "10s")];
        c.egress.allow_private = vec!["127.0.0.0/8".into()];
        // No default price: unknown names stay unpriced.
        c.prices.remove("*");
    })
    .await;
    // On the free plan, whose monthly cap is a hard budget.
    let free = tenant_on(&server, "free-one", "free").await;
    // A pricier sibling is not its base model: `o3-pro` is unpriced, refused before any
    // request reaches the provider, and the error names the missing price.
    let before = mock.requests();
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&free),
            Some(ask("up/o3-pro")),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "model_unpriced"),
        "{:?}",
        r.body
    );
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("up/o3-pro") && message.contains("prices"),
        "{message}"
    );
    assert_eq!(mock.requests(), before, "refused before the provider");
    // Exact names and listed snapshot ids are priced as themselves.
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&free),
            Some(ask("up/o3")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let o3: f64 = r.headers["x-berth-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let u = &r.body["usage"];
    let expected = (u["prompt_tokens"].as_f64().unwrap() * 2.0
        + u["completion_tokens"].as_f64().unwrap() * 8.0)
        / 1e6;
    assert!((o3 - expected).abs() < 1e-9, "{o3} vs {expected}");
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&free),
            Some(ask("up/gpt-4o-mini-2024-07-18")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The tenant's own providers are held to the same rule: an unpriced model of an
    // OpenAI-compatible server is refused, and one of an OpenAI-kind provider is priced
    // like OpenAI's and reserves on the hard budget like any other call.
    own_provider(
        &server,
        &free,
        "local",
        "openai-compatible",
        &mock.url,
        "sk-local-own-key-000000",
    )
    .await;
    own_provider(
        &server,
        &free,
        "myoa",
        "openai",
        &mock.url,
        "sk-myoa-own-key-0000000",
    )
    .await;
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&free),
            Some(ask("local/llama-3")),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "model_unpriced"),
        "{:?}",
        r.body
    );
    put_tenant_budget(&server, &free, 0.000_001).await;
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&free),
            Some(ask("myoa/gpt-4o")),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (402, "budget_exceeded"),
        "BYOK reserves: {:?}",
        r.body
    );
    // So do embeddings, of any provider.
    for model in ["mock/embed", "myoa/text-embedding-3-small"] {
        let r = server
            .call(
                "POST",
                "/v1/embeddings",
                Some(&free),
                Some(json!({"model": model, "input": "embed this sentence, which costs a little".repeat(40)})),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (402, "budget_exceeded"),
            "{model}: {:?}",
            r.body
        );
    }
    // Under no hard budget an unpriced model runs, metered in tokens at no cost.
    let pro = tenant_on(&server, "pro-one", "pro").await;
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&pro),
            Some(ask("up/o3-pro")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.headers["x-berth-cost-usd"], "0.000000000");
    // With a hard budget of its own, the same call is refused.
    put_tenant_budget(&server, &pro, 10.0).await;
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&pro),
            Some(ask("up/o3-pro")),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "model_unpriced"),
        "{:?}",
        r.body
    );
    server.stop().await;
}

async fn put_tenant_budget(server: &TestServer, admin: &str, usd: f64) {
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(admin),
            Some(json!({"budgets": [{"scope": "tenant", "period": "month", "limit_usd": usd, "hard": true}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn embeddings_spend_is_held_and_settled_on_hard_budgets() {
    let server = TestServer::start().await;
    let key = tenant_on(&server, "embedder", "pro").await;
    put_tenant_budget(&server, &key, 1.0).await;
    let r = server
        .call(
            "POST",
            "/v1/embeddings",
            Some(&key),
            Some(json!({"model": "mock/embed", "input": ["one sentence", "and another one"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let cost: f64 = r.headers["x-berth-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0);
    // The budget counts it, to the nano-dollar, once its reservation is settled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = server.get("/v1/usage/summary", &key).await;
        let b = &s.body["budgets"][0];
        if b["reserved_usd"] == 0.0 && b["spent_usd"].as_f64().unwrap() > 0.0 {
            assert!(
                (b["spent_usd"].as_f64().unwrap() - cost).abs() < 1e-12,
                "{b}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// The usage rows of `model`, waiting up to 5 s for one to appear.
async fn usage_of(server: &TestServer, key: &str, model: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rows = usage(server, key, "model").await;
        if let Some(r) = rows.iter().find(|r| r["model"] == model) {
            return r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no usage for {model}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_still_gets_the_call_metered() {
    let mock = MockUpstream::start().await;
    let server = server_with(&mock, "10s").await;
    let key = tenant(&server, "leaver").await;
    for (path, model) in [
        ("/v1/chat/completions", "up/slow-800-no-usage"),
        ("/v1/chat/completions", "up/slow-800"),
        ("/v1/embeddings", "up/slow-800-embed"),
    ] {
        let body = if path == "/v1/embeddings" {
            json!({"model": model, "input": "some words to embed"})
        } else {
            ask(model)
        };
        let gone = server
            .http
            .post(format!("{}{path}", server.url))
            .bearer_auth(&key)
            .timeout(Duration::from_millis(200))
            .json(&body)
            .send()
            .await;
        assert!(gone.is_err(), "{model}: the client left before the answer");
        let row = usage_of(&server, &key, model).await;
        assert_eq!(row["requests"], 1, "{model}: {row}");
        assert!(row["input_tokens"].as_i64().unwrap() > 0, "{model}: {row}");
        if path != "/v1/embeddings" {
            assert!(row["output_tokens"].as_i64().unwrap() > 0, "{model}: {row}");
        }
        assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "{model}: {row}");
    }
    // And its reservation was settled, not left to expire.
    let s = server.get("/v1/usage/summary", &key).await;
    let spent: f64 = s.body["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["spent_usd"].as_f64().unwrap())
        .sum();
    assert!(spent > 0.0, "{:?}", s.body);
    server.stop().await;
}

#[tokio::test]
async fn a_byok_key_echoed_in_a_successful_answer_is_scrubbed_everywhere() {
    let mock = MockUpstream::start().await;
    let server = server_with(&mock, "10s").await;
    let admin = tenant(&server, "echoed").await;
    let own_key = "sk-tenant-echoed-own-key-0123456789";
    own_provider(
        &server,
        &admin,
        "mine",
        "openai-compatible",
        &mock.url,
        own_key,
    )
    .await;
    // Not streamed.
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&admin),
            Some(ask("mine/echo-key")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        mock.seen.last_authorization.lock().unwrap().as_deref(),
        Some(format!("Bearer {own_key}").as_str()),
        "the provider did get the key"
    );
    let text = r.body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, "your key is [redacted]");
    // Streamed in pieces that cut the key, on both client wires.
    let mut streamed = ask("mine/echo-key");
    streamed["stream"] = json!(true);
    let (_, _, sse) = sse_text(&server, "/v1/chat/completions", &admin, streamed.clone()).await;
    assert!(!sse.contains("0123456789"), "{sse}");
    assert_eq!(openai_stream_text(&sse), "your key is [redacted]");
    streamed["max_tokens"] = json!(100);
    let (_, _, sse) = sse_text(&server, "/v1/messages", &admin, streamed).await;
    assert_eq!(anthropic_stream_text(&sse), "your key is [redacted]");
    // A run on that model: neither its output, its trace nor its thread holds the key.
    let d = server
        .call(
            "POST",
            "/v1/agents/echoer/versions",
            Some(&admin),
            Some(json!({"manifest": {"name": "echoer", "model": {"name": "mine/echo-key"}}})),
        )
        .await;
    assert_eq!(d.status, 201, "{:?}", d.body);
    let run = server
        .call(
            "POST",
            "/v1/agents/echoer/runs",
            Some(&admin),
            Some(json!({"input": "hi"})),
        )
        .await;
    assert_eq!(run.body["status"], "succeeded", "{:?}", run.body);
    assert_eq!(run.body["output"], "your key is [redacted]");
    let id = run.body["id"].as_str().unwrap();
    let trace = server.get(&format!("/v1/runs/{id}/trace"), &admin).await;
    assert_eq!(trace.status, 200);
    assert!(
        !trace.body.to_string().contains("0123456789"),
        "{:?}",
        trace.body
    );
    let run = server
        .call(
            "POST",
            "/v1/agents/echoer/runs",
            Some(&admin),
            Some(json!({"input": "hi", "thread": "new"})),
        )
        .await;
    let thread = run.body["thread"].as_str().unwrap();
    let t = server.get(&format!("/v1/threads/{thread}"), &admin).await;
    assert_eq!(t.status, 200, "{:?}", t.body);
    assert!(t.body.to_string().contains("[redacted]"), "{:?}", t.body);
    assert!(!t.body.to_string().contains("0123456789"), "{:?}", t.body);
    server.stop().await;
}

#[tokio::test]
async fn a_byok_key_that_is_not_ascii_is_scrubbed_without_a_panic() {
    let mock = MockUpstream::start().await;
    let server = server_with(&mock, "10s").await;
    let admin = tenant(&server, "unicode").await;
    // Scrubbing it out of what the provider echoes (an error, or an answer) must not cut
    // a char in half.
    own_provider(
        &server,
        &admin,
        "mine",
        "openai-compatible",
        &mock.url,
        "sk-ключ-секрет-0123456789-ß",
    )
    .await;
    for _ in 0..2 {
        let r = server
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&admin),
                Some(ask("mine/error-401")),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (502, "upstream_auth_failed"),
            "{:?}",
            r.body
        );
        assert!(!r.body.to_string().contains("0123456789"), "{:?}", r.body);
    }
    let mut streamed = ask("mine/echo-key");
    streamed["stream"] = json!(true);
    let (status, _, sse) = sse_text(&server, "/v1/chat/completions", &admin, streamed).await;
    assert_eq!(status, 200);
    assert_eq!(openai_stream_text(&sse), "your key is [redacted]");
    // The server lives on.
    let ok = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&admin),
            Some(ask("mock/echo")),
        )
        .await;
    assert_eq!(ok.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn huge_upstream_answers_are_cut_off_with_a_clear_502() {
    let mock = MockUpstream::start().await;
    let url = mock.url.clone();
    let server = TestServer::start_with(Backend::Sqlite, move |c| {
        c.egress.allow_private = vec!["127.0.0.0/8".into()];
        c.gateway.max_response_mb = 1;
        c.gateway.max_stream_event_mb = 1;
        c.gateway.max_stream_mb = 2;
        let _ = url;
    })
    .await;
    // On the pro plan: a flood of text is charged in tokens, beyond a free plan's minute.
    let admin = tenant_on(&server, "flooded", "pro").await;
    own_provider(
        &server,
        &admin,
        "mine",
        "openai-compatible",
        &mock.url,
        "sk-flooded-own-key-0000000",
    )
    .await;
    // Not streamed: chat and embeddings.
    let r = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&admin),
            Some(ask("mine/huge")),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (502, "upstream_too_large"),
        "{:?}",
        r.body
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1048576")
    );
    let r = server
        .call(
            "POST",
            "/v1/embeddings",
            Some(&admin),
            Some(json!({"model": "mine/huge", "input": "x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (502, "upstream_too_large"),
        "{:?}",
        r.body
    );
    // Streamed: endless events, and one endless event; each ends with an in-band error,
    // and what was streamed is still charged.
    for model in ["mine/huge", "mine/huge-event"] {
        let mut body = ask(model);
        body["stream"] = json!(true);
        let (status, _, text) = sse_text(&server, "/v1/chat/completions", &admin, body).await;
        assert_eq!(status, 200, "{text}");
        assert!(
            text.contains("upstream_too_large"),
            "{model}: {}",
            &text[text.len().saturating_sub(300)..]
        );
        assert!(
            text.len() < 3 << 20,
            "{model}: {} bytes passed on",
            text.len()
        );
    }
    let row = usage_of(&server, &admin, "mine/huge").await;
    assert!(row["requests"].as_i64().unwrap() >= 2, "{row}");
    assert!(
        row["output_tokens"].as_i64().unwrap() > 0,
        "the stream was charged: {row}"
    );
    assert_eq!(
        server
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&admin),
                Some(ask("mock/echo"))
            )
            .await
            .status,
        200
    );
    server.stop().await;
}
