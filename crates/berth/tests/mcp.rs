//! End-to-end tests of the MCP tool layer against mock MCP servers of both protocol
//! revisions: registration and discovery, credentials injected from the vault and never
//! shown, policy and per-tool rate limits, the audit of every call, the tenant `/mcp`
//! endpoint (with approvals by id), `tools/list_changed`, health checks, and upstreams that
//! hang, answer garbage or answer too much.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use base64::Engine;
use berth::config::ProviderConfig;
use berth_testkit::mock_llm::MockUpstream;
use berth_testkit::mock_mcp::{self, MockMcp, Revision};
use berth_testkit::{Backend, TestServer};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SECRET: &str = "sk-live-Zq8Tn3WvK1pXr7Lm";

async fn server_with(
    tweak: impl FnOnce(&mut berth::config::Config) + Send + 'static,
) -> (MockUpstream, TestServer) {
    let mock = MockUpstream::start().await;
    let url = mock.url.clone();
    let server = TestServer::start_with(Backend::Sqlite, move |c| {
        c.egress.allow_private = vec!["127.0.0.0/8".into()];
        c.providers = vec![ProviderConfig {
            name: "up".into(),
            kind: "openai".into(),
            base_url: Some(url),
            api_key_env: None,
            timeout: Some("30s".into()),
            api_key: Some("sk-platform".into()),
        }];
        tweak(c);
    })
    .await;
    (mock, server)
}

async fn admin(server: &TestServer, name: &str) -> (String, String) {
    let t = server.create_tenant(name).await;
    let (_, key) = server.create_key(&t, "admin").await;
    (t, key)
}

async fn register(
    server: &TestServer,
    key: &str,
    name: &str,
    url: &str,
    headers: Value,
) -> berth_testkit::Answer {
    server
        .call(
            "POST",
            "/v1/mcp-servers",
            Some(key),
            Some(json!({"name": name, "url": url, "headers": headers})),
        )
        .await
}

fn tool_names(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn args_model(args: Value) -> String {
    format!(
        "up/tools-args-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(args.to_string())
    )
}

async fn deploy(server: &TestServer, key: &str, name: &str, model: &str, uses: &[&str]) {
    let r = server
        .call(
            "POST",
            &format!("/v1/agents/{name}/versions"),
            Some(key),
            Some(json!({"manifest": {"name": name, "model": {"name": model}, "tools": {"use": uses}}})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

fn result_text(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("")
}

#[tokio::test]
async fn servers_of_both_revisions_are_discovered_listed_refreshed_and_removed() {
    let modern = MockMcp::start(Revision::Modern).await;
    let legacy = MockMcp::start(Revision::Legacy).await;
    let (_llm, server) = server_with(|_| {}).await;
    let (_, key) = admin(&server, "registry").await;

    let r = register(&server, &key, "shop", &modern.url, json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["protocol_version"], "2026-07-28");
    assert_eq!(r.body["status"], "healthy");
    let names = tool_names(&r.body["tools"]);
    assert!(
        names.contains(&"shop__echo".to_owned()) && names.contains(&"shop__add".to_owned()),
        "{names:?}"
    );
    // A tool with a schema that is not an object schema is left out, and said so.
    assert!(!names.contains(&"shop__broken".to_owned()));
    assert!(
        r.body["last_error"].as_str().unwrap().contains("broken"),
        "{:?}",
        r.body
    );
    // Annotations are shown as the server gave them.
    let destroy = r.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "shop__destroy")
        .unwrap();
    assert_eq!(destroy["annotations"]["destructiveHint"], true);

    let r = register(&server, &key, "old", &legacy.url, json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["protocol_version"], "2025-11-25");

    let list = server.get("/v1/mcp-servers", &key).await;
    assert_eq!(list.status, 200);
    let servers = list.body["data"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    for s in servers {
        assert_eq!(s["status"], "healthy");
        assert_eq!(s["tool_count"], names.len());
        assert!(s["checked_at"].is_string());
    }

    let tools = server.get("/v1/tools", &key).await;
    let all = tool_names(&tools.body["data"]);
    for t in ["shop__add", "old__add", "mock__echo"] {
        assert!(all.contains(&t.to_owned()), "{t} in {all:?}");
    }
    let add = tools.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "old__add")
        .unwrap();
    assert_eq!(add["server"], "old");
    assert_eq!(add["input_schema"]["required"], json!(["a", "b"]));

    let r = server
        .call("POST", "/v1/mcp-servers/old/refresh", Some(&key), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(tool_names(&r.body["tools"]).len(), names.len());

    let r = server
        .call("DELETE", "/v1/mcp-servers/old", Some(&key), None)
        .await;
    assert_eq!(r.status, 204);
    let r = server
        .call("DELETE", "/v1/mcp-servers/old", Some(&key), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "mcp_server_not_found");
    let all = tool_names(&server.get("/v1/tools", &key).await.body["data"]);
    assert!(!all.iter().any(|t| t.starts_with("old__")), "{all:?}");

    // Bad registrations are refused with the field named.
    for (body, param) in [
        (json!({"name": "Bad_Name", "url": modern.url}), "name"),
        (json!({"name": "mock", "url": modern.url}), "name"),
        (json!({"name": "x", "url": "ftp://example.com/mcp"}), "url"),
        (
            json!({"name": "x", "url": modern.url, "headers": {"Host": {"secret": "S"}}}),
            "headers",
        ),
        (
            json!({"name": "x", "url": modern.url, "headers": {"Authorization": {"secret": "MISSING"}}}),
            "headers",
        ),
    ] {
        let r = server
            .call("POST", "/v1/mcp-servers", Some(&key), Some(body.clone()))
            .await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        assert_eq!(r.body["error"]["param"], param, "{body}: {:?}", r.body);
    }
    server.stop().await;
}

#[tokio::test]
async fn registered_urls_pass_the_egress_guard() {
    let modern = MockMcp::start(Revision::Modern).await;
    // No `allow_private`: loopback is refused, literally and after resolution.
    let server = TestServer::start().await;
    let (_, key) = admin(&server, "egress").await;
    let r = register(&server, &key, "local", &modern.url, json!({})).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "egress_denied");
    let by_name = modern.url.replace("127.0.0.1", "localhost");
    let r = register(&server, &key, "local", &by_name, json!({})).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{:?}",
        r.body
    );
    assert_eq!(modern.calls(), 0);
    assert!(modern.headers().is_empty(), "the server was never reached");
    server.stop().await;
}

#[tokio::test]
async fn an_agent_calls_mcp_tools_with_the_tenant_credential_which_shows_nowhere() {
    let shop = MockMcp::start(Revision::Modern).await;
    let (_llm, server) = server_with(|_| {}).await;
    let (_, key) = admin(&server, "creds").await;
    let r = server
        .call(
            "PUT",
            "/v1/secrets/SHOP_TOKEN",
            Some(&key),
            Some(json!({"value": SECRET})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = register(
        &server,
        &key,
        "shop",
        &shop.url,
        json!({"Authorization": {"secret": "SHOP_TOKEN", "prefix": "Bearer "}}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    // The tool reads back the header it received; the model gets it scrubbed.
    deploy(
        &server,
        &key,
        "who",
        &args_model(json!({})),
        &["shop__whoami"],
    )
    .await;
    let run = server
        .call(
            "POST",
            "/v1/agents/who/runs",
            Some(&key),
            Some(json!({"input": "who am I?"})),
        )
        .await;
    assert_eq!(run.status, 200, "{:?}", run.body);
    assert_eq!(
        run.body["output"], "tool result: Bearer [REDACTED]",
        "{:?}",
        run.body
    );
    assert_eq!(run.body["usage"]["tool_calls"], 1);
    // It did reach the server, on every request to it.
    let seen = shop.headers();
    assert!(!seen.is_empty());
    for h in &seen {
        assert_eq!(
            h.get("authorization").unwrap().to_str().unwrap(),
            format!("Bearer {SECRET}")
        );
    }

    // An echo of the credential through arguments is scrubbed as well.
    deploy(
        &server,
        &key,
        "echo",
        &args_model(json!({"q": "x"})),
        &["shop__echo"],
    )
    .await;
    let run2 = server
        .call(
            "POST",
            "/v1/agents/echo/runs",
            Some(&key),
            Some(json!({"input": "go"})),
        )
        .await;
    assert_eq!(run2.status, 200, "{:?}", run2.body);
    assert!(
        run2.body["output"]
            .as_str()
            .unwrap()
            .contains("\"q\":\"x\""),
        "{:?}",
        run2.body
    );

    let id = run.body["id"].as_str().unwrap();
    let mut everything = vec![run.body.clone(), run2.body.clone()];
    for path in [
        format!("/v1/runs/{id}"),
        format!("/v1/runs/{id}/trace"),
        "/v1/audit?limit=500".to_owned(),
        "/v1/mcp-servers".to_owned(),
        "/v1/tools".to_owned(),
        "/v1/usage".to_owned(),
        "/v1/secrets".to_owned(),
    ] {
        let a = server.get(&path, &key).await;
        assert_eq!(a.status, 200, "{path}: {:?}", a.body);
        everything.push(a.body);
    }
    let events = reqwest::Client::new()
        .get(format!("{}/v1/runs/{id}/events", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("tool.result"), "{events}");
    for (i, body) in everything.iter().enumerate() {
        assert!(
            !body.to_string().contains(SECRET),
            "secret in answer {i}: {body}"
        );
    }
    assert!(!events.contains(SECRET));

    // Every tool call is audited: tenant chain, agent, run, tool, argument digest,
    // outcome, latency.
    let audit = server.get("/v1/audit?limit=500", &key).await;
    let calls: Vec<&Value> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tool.call")
        .collect();
    assert_eq!(calls.len(), 2, "{:?}", audit.body);
    let who = calls
        .iter()
        .find(|e| e["target"] == "shop__whoami")
        .unwrap();
    assert_eq!(who["details"]["agent"], "who");
    assert_eq!(who["details"]["run"], id);
    assert_eq!(who["details"]["outcome"], "ok");
    assert_eq!(who["details"]["args_sha256"].as_str().unwrap().len(), 64);
    assert!(who["details"]["latency_us"].as_u64().unwrap() > 0);
    let verify = server.get("/v1/audit/verify", &key).await;
    assert_eq!(
        verify.body["ok"], true,
        "the chain holds: {:?}",
        verify.body
    );
    server.stop().await;
}

#[tokio::test]
async fn policy_decides_which_tools_and_per_tool_rate_limits_apply() {
    let shop = MockMcp::start(Revision::Modern).await;
    let (_llm, server) = server_with(|_| {}).await;
    let (_, key) = admin(&server, "policy").await;
    assert_eq!(
        register(&server, &key, "shop", &shop.url, json!({}))
            .await
            .status,
        201
    );
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&key),
            Some(
                json!({"tools": {"allow": {"*": ["shop__echo", "shop__add", "mock__*"]},
                                  "rate_limits": [{"tool": "shop__add", "per_minute": 2}]}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let tools = tool_names(&server.get("/v1/tools", &key).await.body["data"]);
    assert!(tools.contains(&"shop__echo".to_owned()));
    assert!(
        !tools.contains(&"shop__destroy".to_owned()),
        "not allowed by the policy: {tools:?}"
    );

    // An agent that asks for everything is offered only what the policy allows: the model
    // (`tools` calls the first tool offered) gets `shop__add` first, never `shop__destroy`.
    deploy(
        &server,
        &key,
        "greedy",
        &args_model(json!({"a": 2, "b": 3})),
        &["shop__destroy", "shop__add"],
    )
    .await;
    let run = server
        .call(
            "POST",
            "/v1/agents/greedy/runs",
            Some(&key),
            Some(json!({"input": "add"})),
        )
        .await;
    assert_eq!(run.body["output"], "tool result: 5", "{:?}", run.body);

    // Two calls a minute to shop__add, for this tenant; the third is refused before the
    // server, and echo has its own (unlimited) budget.
    let calls_before = shop.calls();
    let mcp = mock_mcp::client(&format!("{}/mcp", server.url), &key, false)
        .await
        .unwrap();
    let add = || {
        CallToolRequestParams::new("shop__add")
            .with_arguments(json!({"a": 1, "b": 1}).as_object().unwrap().clone())
    };
    let first = mcp.peer().call_tool(add()).await.unwrap();
    assert_eq!(result_text(&first), "2");
    assert_ne!(first.is_error, Some(true));
    let third = mcp.peer().call_tool(add()).await.unwrap();
    assert_eq!(third.is_error, Some(true), "{third:?}");
    assert!(result_text(&third).contains("rate limited"), "{third:?}");
    assert_eq!(
        shop.calls(),
        calls_before + 1,
        "the refused call never reached the server"
    );
    let echo = CallToolRequestParams::new("shop__echo")
        .with_arguments(json!({"x": 1}).as_object().unwrap().clone());
    assert_ne!(
        mcp.peer().call_tool(echo).await.unwrap().is_error,
        Some(true)
    );
    let denied = CallToolRequestParams::new("shop__destroy");
    let d = mcp.peer().call_tool(denied).await.unwrap();
    assert_eq!(d.is_error, Some(true));
    assert!(result_text(&d).contains("not available"), "{d:?}");
    // Calls through /mcp are metered per tool like a run's (the recorder writes in
    // batches): the run's call and the /mcp calls of shop__add.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let usage = server.get("/v1/usage?group_by=model", &key).await;
        let add = usage.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == "shop__add")
            .cloned();
        if add
            .as_ref()
            .is_some_and(|r| r["tool_calls"].as_i64() >= Some(3))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shop__add not metered: {:?}",
            usage.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A key restricted to one agent gets what that agent's manifest names, within the policy.
    let r = server
        .call(
            "POST",
            "/v1/keys",
            Some(&key),
            Some(json!({"name": "greedy-only", "role": "invoker", "agent": "greedy"})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let only = r.body["key"].as_str().unwrap().to_owned();
    let mine = tool_names(&server.get("/v1/tools", &only).await.body["data"]);
    assert_eq!(mine, vec!["shop__add".to_owned()], "manifest ∩ policy");
    let restricted = mock_mcp::client(&format!("{}/mcp", server.url), &only, false)
        .await
        .unwrap();
    let echo = CallToolRequestParams::new("shop__echo")
        .with_arguments(json!({"x": 1}).as_object().unwrap().clone());
    let refused = restricted.peer().call_tool(echo).await.unwrap();
    assert_eq!(refused.is_error, Some(true));
    assert!(
        result_text(&refused).contains("not available"),
        "{refused:?}"
    );
    // What the key may call follows the agent's traffic at once (the restricted key's
    // tools are cached): a new version that uses echo takes all traffic, then a rollback.
    let echo_call = || async {
        let echo = CallToolRequestParams::new("shop__echo")
            .with_arguments(json!({"x": 1}).as_object().unwrap().clone());
        restricted.peer().call_tool(echo).await.unwrap()
    };
    deploy(
        &server,
        &key,
        "greedy",
        &args_model(json!({"x": 1})),
        &["shop__echo"],
    )
    .await;
    let allowed = echo_call().await;
    assert_ne!(allowed.is_error, Some(true), "{allowed:?}");
    let r = server
        .call(
            "POST",
            "/v1/agents/greedy/rollback",
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let refused = echo_call().await;
    assert_eq!(refused.is_error, Some(true), "{refused:?}");
    assert!(result_text(&refused).contains("not available"));
    let audit = server.get("/v1/audit?limit=500", &key).await;
    assert!(
        audit.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "tool.call" && e["details"]["outcome"] == "rate_limited"),
        "{:?}",
        audit.body
    );
    server.stop().await;
}

#[tokio::test]
async fn the_tenant_mcp_endpoint_serves_both_lifecycles_with_approvals_by_id() {
    let shop = MockMcp::start(Revision::Legacy).await;
    let (_llm, server) = server_with(|_| {}).await;
    let (t, key) = admin(&server, "endpoint").await;
    let (_, invoker) = server.create_key(&t, "invoker").await;
    let (_, viewer) = server.create_key(&t, "viewer").await;
    assert_eq!(
        register(&server, &key, "shop", &shop.url, json!({}))
            .await
            .status,
        201
    );
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&key),
            Some(json!({"tools": {"approval": ["*__destroy"]}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let url = format!("{}/mcp", server.url);

    // Issue 14, item 5: built-in tools are offered to an MCP client only when the policy
    // names them; a policy that allows every tool by default does not.
    let mcp = mock_mcp::client(&url, &invoker, false).await.unwrap();
    let listed: Vec<String> = mcp
        .peer()
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        listed.contains(&"shop__add".to_owned())
            && !listed
                .iter()
                .any(|t| t.starts_with("mock__") || t.starts_with("sandbox__")),
        "{listed:?}"
    );
    for name in ["sandbox__exec", "mock__echo"] {
        let refused = mcp
            .peer()
            .call_tool(
                CallToolRequestParams::new(name).with_arguments(
                    json!({"language": "sh", "code": "echo hi"})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
            )
            .await
            .unwrap();
        assert_eq!(refused.is_error, Some(true), "{name}: {refused:?}");
        assert!(
            result_text(&refused).contains("not available"),
            "{refused:?}"
        );
    }
    drop(mcp);
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&key),
            Some(json!({"tools": {"allow": {"*": ["*", "mock__*"]}, "approval": ["*__destroy"]}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    for legacy in [true, false] {
        let mcp = mock_mcp::client(&url, &invoker, legacy).await.unwrap();
        let info = mcp.peer().peer_info().unwrap();
        assert_eq!(
            info.protocol_version.as_str(),
            if legacy { "2025-11-25" } else { "2026-07-28" }
        );
        let tools: Vec<String> = mcp
            .peer()
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        assert!(
            tools.contains(&"shop__add".to_owned()) && tools.contains(&"mock__echo".to_owned()),
            "{tools:?}"
        );
        let sum = mcp
            .peer()
            .call_tool(
                CallToolRequestParams::new("shop__add")
                    .with_arguments(json!({"a": 2, "b": 3}).as_object().unwrap().clone()),
            )
            .await
            .unwrap();
        assert_eq!(result_text(&sum), "5");
    }

    // A call that needs a human is refused with the id of the approval it created.
    let mcp = mock_mcp::client(&url, &invoker, false).await.unwrap();
    let destroy = || {
        CallToolRequestParams::new("shop__destroy")
            .with_arguments(json!({"what": "all"}).as_object().unwrap().clone())
    };
    let calls_before = shop.calls();
    let first = mcp.peer().call_tool(destroy()).await.unwrap();
    assert_eq!(first.is_error, Some(true));
    let text = result_text(&first);
    let id = text
        .split_whitespace()
        .find(|w| w.starts_with("apr_"))
        .map(|w| w.trim_end_matches(['.', ',']).to_owned())
        .unwrap_or_else(|| panic!("no approval id in {text}"));
    // Asking again before anyone decided gives the same approval, not a new one.
    let again = result_text(&mcp.peer().call_tool(destroy()).await.unwrap());
    assert!(again.contains(&id), "{again}");
    let approval = |status: &'static str| {
        let server = &server;
        let key = key.clone();
        let id = id.clone();
        async move {
            let list = server
                .get(&format!("/v1/approvals?status={status}"), &key)
                .await;
            list.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == id.as_str())
                .cloned()
        }
    };
    let a = approval("pending").await.expect("pending approval listed");
    assert_eq!(a["status"], "pending");
    assert_eq!(a["run"], Value::Null);
    assert_eq!(a["tool"], "shop__destroy");
    assert_eq!(shop.calls(), calls_before, "not called before approval");
    let d = server
        .call(
            "POST",
            &format!("/v1/approvals/{id}"),
            Some(&key),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(d.status, 200, "{:?}", d.body);
    // Different arguments are not covered by it.
    let other = CallToolRequestParams::new("shop__destroy")
        .with_arguments(json!({"what": "some"}).as_object().unwrap().clone());
    assert_eq!(
        mcp.peer().call_tool(other).await.unwrap().is_error,
        Some(true)
    );
    let second = mcp.peer().call_tool(destroy()).await.unwrap();
    assert_eq!(result_text(&second), "destroyed", "{second:?}");
    assert_eq!(shop.calls(), calls_before + 1);
    assert!(approval("used").await.is_some(), "the approval is used up");
    // One approval, one call.
    let third = mcp.peer().call_tool(destroy()).await.unwrap();
    assert_eq!(third.is_error, Some(true));
    assert!(result_text(&third).contains("approval_id"), "{third:?}");

    // Credentials: none, wrong, or a role below invoker.
    let http = reqwest::Client::new();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    for (token, status) in [
        (None, 401),
        (Some("bk_wrong"), 401),
        (Some(viewer.as_str()), 403),
    ] {
        let mut req = http
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), status);
    }
    server.stop().await;
}

#[tokio::test]
async fn servers_of_both_revisions_announce_a_changed_tool_list() {
    let legacy = MockMcp::start(Revision::Legacy).await;
    let modern = MockMcp::start(Revision::Modern).await;
    // No health check within the test: only the servers' announcements can bring news.
    let (_llm, server) = server_with(|c| c.mcp.health_interval = "1h".into()).await;
    let (_, key) = admin(&server, "announce").await;
    for (name, url) in [("old", &legacy.url), ("new", &modern.url)] {
        assert_eq!(
            register(&server, &key, name, url, json!({})).await.status,
            201
        );
    }
    // 2025-11-25: the server pushes `tools/list_changed` on its session. 2026-07-28: it
    // sends it on the `subscriptions/listen` stream Berth opened when it connected.
    legacy.add_tool("late").await;
    modern.add_tool("fresh").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tools = tool_names(&server.get("/v1/tools", &key).await.body["data"]);
        if tools.contains(&"old__late".to_owned()) && tools.contains(&"new__fresh".to_owned()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old__late and new__fresh never both appeared: {tools:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_shows_up() {
    let modern = MockMcp::start(Revision::Modern).await;
    let (_llm, server) = server_with(|c| c.mcp.health_interval = "1s".into()).await;
    let (_, key) = admin(&server, "health").await;
    assert_eq!(
        register(&server, &key, "gone", &modern.url, json!({}))
            .await
            .status,
        201
    );

    // A server that goes away is marked unreachable by the background checks.
    drop(modern);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = server.get("/v1/mcp-servers", &key).await;
        let gone = list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "gone")
            .unwrap()
            .clone();
        if gone["status"] == "unreachable" {
            assert!(gone["last_error"].is_string(), "{gone}");
            break;
        }
        assert!(Instant::now() < deadline, "never unreachable: {gone}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn upstreams_that_hang_answer_garbage_or_too_much_are_contained() {
    let (hang_url, _hang) = mock_mcp::hanging().await;
    let (garbage_url, _garbage) = mock_mcp::garbage().await;
    let shop = MockMcp::start(Revision::Modern).await;
    let (_llm, server) = server_with(|c| {
        c.mcp.connect_timeout = "1s".into();
        c.mcp.call_timeout = "1s".into();
        c.mcp.max_result_kb = 64;
    })
    .await;
    let (_, key) = admin(&server, "hostile").await;

    let started = Instant::now();
    let r = register(&server, &key, "hang", &hang_url, json!({})).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "mcp_server_unreachable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let r = register(&server, &key, "junk", &garbage_url, json!({})).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("junk"),
        "{:?}",
        r.body
    );
    assert_eq!(
        server.get("/v1/mcp-servers", &key).await.body["data"],
        json!([]),
        "nothing stored"
    );

    assert_eq!(
        register(&server, &key, "shop", &shop.url, json!({}))
            .await
            .status,
        201
    );
    let mcp = mock_mcp::client(&format!("{}/mcp", server.url), &key, false)
        .await
        .unwrap();
    let call = |name: &str, args: Value| {
        CallToolRequestParams::new(name.to_owned())
            .with_arguments(args.as_object().unwrap().clone())
    };
    // Too slow: the call fails at the deadline, and the next call works.
    let started = Instant::now();
    let slow = mcp
        .peer()
        .call_tool(call("shop__slow", json!({"ms": 5000})))
        .await
        .unwrap();
    assert_eq!(slow.is_error, Some(true));
    assert!(result_text(&slow).contains("no answer within"), "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let ok = mcp
        .peer()
        .call_tool(call("shop__add", json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    assert_eq!(result_text(&ok), "3");
    // Never done talking: an upstream that streams notifications as fast as it can and
    // never answers fails at the deadline too, holding no more memory than a bounded
    // backlog, and another tenant is served meanwhile.
    let (_, other) = admin(&server, "bystander").await;
    let rss_before = berth_testkit::rss_kib();
    let started = Instant::now();
    let chatty = mcp
        .peer()
        .call_tool(call("shop__slow", json!({"ms": 60_000, "chatter": true})));
    let bystander = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let me = server.get("/v1/me", &other).await;
        (me.status, t.elapsed())
    };
    let (chatty, (me_status, me_took)) = tokio::join!(chatty, bystander);
    let chatty = chatty.unwrap();
    assert_eq!(chatty.is_error, Some(true), "{chatty:?}");
    assert!(
        result_text(&chatty).contains("no answer within"),
        "{chatty:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(me_status, 200);
    assert!(me_took < Duration::from_secs(2), "{me_took:?}");
    let grew_mib = berth_testkit::rss_kib().saturating_sub(rss_before) / 1024;
    let sent = shop.notifications();
    println!("RSS grew {grew_mib} MiB while the upstream sent {sent} notifications of 1 KiB");
    assert!(sent > 100, "the upstream hardly talked: {sent}");
    assert!(grew_mib < 128, "RSS grew {grew_mib} MiB");
    let ok = mcp
        .peer()
        .call_tool(call("shop__add", json!({"a": 2, "b": 2})))
        .await
        .unwrap();
    assert_eq!(result_text(&ok), "4");
    // Too big: refused with the sizes named.
    let big = mcp
        .peer()
        .call_tool(call("shop__huge", json!({"bytes": 200_000})))
        .await
        .unwrap();
    assert_eq!(big.is_error, Some(true));
    assert!(result_text(&big).contains("limit"), "{big:?}");
    // A tool error stays a tool error.
    let fail = mcp
        .peer()
        .call_tool(call("shop__fail", json!({})))
        .await
        .unwrap();
    assert_eq!(fail.is_error, Some(true));
    assert!(result_text(&fail).contains("the mock tool failed"));
    // Not an object, and unknown tools.
    let unknown = mcp
        .peer()
        .call_tool(call("shop__nope", json!({})))
        .await
        .unwrap();
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        result_text(&unknown).contains("no tool named"),
        "{unknown:?}"
    );
    server.stop().await;
}

/// Issue 14, item 3: a developer key registers an MCP server of its own with a header
/// filled from an admin's BYOK secret; the secret never leaves, and the refusal is audited.
#[tokio::test]
async fn a_developer_cannot_send_an_admins_secret_to_a_server_of_its_own() {
    let evil = MockMcp::start(Revision::Modern).await;
    let (llm, server) = server_with(|_| {}).await;
    let (t, admin_key) = admin(&server, "bound").await;
    let (_, dev) = server.create_key(&t, "developer").await;
    let put = |key: String, name: &'static str, body: Value| {
        let server = &server;
        async move {
            server
                .call(
                    "PUT",
                    &format!("/v1/secrets/{name}"),
                    Some(&key),
                    Some(body),
                )
                .await
        }
    };
    let r = put(
        admin_key.clone(),
        "OPENAI_KEY",
        json!({"value": SECRET, "binding": ["provider:mine"]}),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = put(admin_key.clone(), "PLAIN", json!({"value": SECRET})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let listed = server.get("/v1/secrets", &dev).await;
    let bound = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "OPENAI_KEY")
        .unwrap()
        .clone();
    assert_eq!(bound["binding"], json!(["provider:mine"]), "{bound}");
    assert_eq!(bound["written_by_role"], "admin");

    // The admin's provider gets its key.
    let r = server
        .call(
            "PUT",
            "/v1/providers/mine",
            Some(&admin_key),
            Some(json!({"kind": "openai", "base_url": llm.url, "api_key_secret": "OPENAI_KEY"})),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "{:?}", r.body);
    let chat = |key: String| {
        let server = &server;
        async move {
            server
                .call(
                    "POST",
                    "/v1/chat/completions",
                    Some(&key),
                    Some(json!({"model": "mine/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})),
                )
                .await
        }
    };
    let r = chat(dev.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The attack: the bound secret, and an unbound one an admin wrote, refused before any
    // connection is made.
    for secret in ["OPENAI_KEY", "PLAIN"] {
        let r = register(
            &server,
            &dev,
            "evil",
            &evil.url,
            json!({"Authorization": {"secret": secret, "prefix": "Bearer "}}),
        )
        .await;
        assert_eq!(r.status, 403, "{secret}: {:?}", r.body);
        assert_eq!(r.code(), "secret_not_bound");
        assert!(!r.body.to_string().contains(SECRET));
    }
    assert!(
        evil.headers().is_empty(),
        "the server of the developer's choosing was never contacted"
    );
    // An admin's own registration of a server the binding does not name is refused too:
    // the binding holds whatever role asks.
    let r = register(
        &server,
        &admin_key,
        "evil",
        &evil.url,
        json!({"Authorization": {"secret": "OPENAI_KEY"}}),
    )
    .await;
    assert_eq!(r.code(), "secret_not_bound", "{:?}", r.body);
    assert!(evil.headers().is_empty());
    let audit = server
        .get("/v1/audit?limit=500", &admin_key)
        .await
        .body
        .clone();
    let refused: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "secret.refused")
        .collect();
    assert_eq!(refused.len(), 3, "{audit}");
    assert_eq!(refused[0]["target"], "OPENAI_KEY", "{}", refused[0]);
    assert!(
        refused[0].to_string().contains("mcp:evil"),
        "{}",
        refused[0]
    );
    assert!(
        !audit.to_string().contains(SECRET),
        "the audit log never holds the value"
    );

    // Only an admin changes a binding without writing the value; a host binding lets the
    // developer's server have it, whoever registered that server.
    let r = put(dev.clone(), "OPENAI_KEY", json!({"binding": ["127.0.0.1"]})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = put(
        admin_key.clone(),
        "OPENAI_KEY",
        json!({"binding": ["provider:mine", "127.0.0.1"]}),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = register(
        &server,
        &dev,
        "evil",
        &evil.url,
        json!({"Authorization": {"secret": "OPENAI_KEY", "prefix": "Bearer "}}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(!evil.headers().is_empty());

    // A binding that no longer names the provider keeps its key from it as well.
    let r = put(
        admin_key.clone(),
        "OPENAI_KEY",
        json!({"binding": ["mcp:other"]}),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = chat(dev.clone()).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "secret_not_bound");

    // A developer's own secret goes where a developer registers it (unbound).
    let r = put(
        dev.clone(),
        "DEV_TOKEN",
        json!({"value": "dev-token-123456"}),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = register(
        &server,
        &dev,
        "mine",
        &evil.url,
        json!({"Authorization": {"secret": "DEV_TOKEN"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = put(
        dev.clone(),
        "BAD",
        json!({"value": "x", "binding": ["http://x/"]}),
    )
    .await;
    assert_eq!(r.code(), "invalid_binding", "{:?}", r.body);
}

/// Issue 14, item 5: `/mcp` requests pass the tenant's request limits like gateway calls.
#[tokio::test]
async fn the_mcp_endpoint_is_held_to_the_request_limits() {
    let (_llm, server) = server_with(|_| {}).await;
    let (_t, key) = admin(&server, "limited").await;
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&key),
            Some(json!({"limits": {"requests_per_minute": 3}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = server
            .http
            .post(format!("{}/mcp", server.url))
            .bearer_auth(&key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&list)
            .send()
            .await
            .unwrap();
        statuses.push((r.status().as_u16(), r.headers().contains_key("retry-after")));
    }
    assert!(
        statuses.iter().take(3).all(|(s, _)| *s != 429),
        "{statuses:?}"
    );
    assert!(
        statuses[3..].iter().all(|s| *s == (429, true)),
        "{statuses:?}"
    );
    // And the gateway shares the same minute: it is refused too.
    let g = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(g.status, 429, "{:?}", g.body);
    server.stop().await;
}
