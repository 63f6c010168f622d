//! The cross-tenant isolation suite: every endpoint, every role, the other tenant's ids.
//!
//! The table below lists every route the server has. `table_covers_every_route` compares
//! it with `/openapi.json` (generated from the router itself), so adding an endpoint
//! without adding it here fails the build's tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use berth_testkit::mock_mcp::{MockMcp, Revision};
use berth_testkit::{Answer, Backend, OPERATOR_TOKEN, TestServer, pg_test_database};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    /// No credential needed.
    Public,
    /// The operator token only.
    Operator,
    /// A tenant credential with at least this role; agent-restricted keys refused.
    Tenant(&'static str),
    /// A tenant credential with at least this role; agent-restricted keys allowed.
    AnyTenantKey(&'static str),
}

/// What the `{…}` placeholder of a path names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Param {
    None,
    TenantId,
    KeyId,
    SecretName,
    ProviderName,
    AgentName,
    RunId,
    ThreadId,
    ApprovalId,
    /// An MCP server registered by the tenant (at the mock of [`mock_mcp_url`]).
    McpServer,
    /// A month (`YYYY-MM`): not a resource, every tenant has its own.
    Month,
}

struct Case {
    method: &'static str,
    path: &'static str,
    access: Access,
    param: Param,
    body: Option<fn(&str) -> Value>,
}

const fn case(
    method: &'static str,
    path: &'static str,
    access: Access,
    param: Param,
    body: Option<fn(&str) -> Value>,
) -> Case {
    Case {
        method,
        path,
        access,
        param,
        body,
    }
}

fn tenant_body(_: &str) -> Value {
    json!({"name": format!("iso-{}", rand_suffix())})
}
fn patch_body(_: &str) -> Value {
    json!({"plan": "pro"})
}
fn key_body(_: &str) -> Value {
    json!({"name": "iso", "role": "viewer"})
}
fn policy_body(_: &str) -> Value {
    json!({"models": {"allow": ["mock/*"], "aliases": {"fast": "mock/echo"}}})
}
fn provider_body(_: &str) -> Value {
    json!({"kind": "openai", "api_key_secret": "ISO_KEY"})
}
fn chat_body(_: &str) -> Value {
    json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]})
}
fn messages_body(_: &str) -> Value {
    json!({"model": "mock/echo", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
}
fn embeddings_body(_: &str) -> Value {
    json!({"model": "mock/embed", "input": "hi"})
}
fn deploy_body(agent: &str) -> Value {
    json!({"manifest": {"name": agent, "model": {"name": "mock/echo"}, "description": "iso"}})
}
/// The agent restricted keys may use: it calls `mock__echo` when asked, and that call
/// waits for approval.
fn support_body() -> Value {
    json!({"manifest": {"name": "support", "model": {"name": "mock/tools"}, "description": "iso",
                        "tools": {"use": ["mock__echo"], "approval": ["mock__echo"]}}})
}
fn decide_body(_: &str) -> Value {
    json!({"decision": "deny", "reason": "isolation test"})
}
fn run_body(_: &str) -> Value {
    json!({"input": "hi"})
}
fn traffic_body(_: &str) -> Value {
    json!({"split": [{"version": 1, "weight": 100}]})
}
fn rollback_body(_: &str) -> Value {
    json!({"to": 1})
}
fn secret_body(_: &str) -> Value {
    json!({"value": "isolation-secret-value"})
}

fn mcp_server_body(_: &str) -> Value {
    json!({"name": format!("m{}", rand_suffix()), "url": mock_mcp_url()})
}
/// A JSON-RPC request to the tenant MCP endpoint (sent with [`MCP_HEADERS`]).
fn mcp_list_body(_: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
}

/// The headers a Streamable HTTP MCP client sends with every request to `/mcp`.
const MCP_HEADERS: [(&str, &str); 2] = [
    ("accept", "application/json, text/event-stream"),
    ("mcp-protocol-version", "2025-11-25"),
];

/// One mock MCP server for the whole test binary, which every tenant's MCP server fixture
/// points at. It runs on a thread of its own, so it outlives each test's runtime (the body
/// functions of the table cannot carry a per-test URL).
fn mock_mcp_url() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mock = MockMcp::start(Revision::Modern).await;
                tx.send(mock.url.clone()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    })
}

/// The test config: the egress guard lets it reach the mock MCP server on loopback, and
/// the free plan's requests per minute are raised, since the table's hundreds of calls
/// (`/mcp` ones included) would otherwise be rate limited.
fn isolation_config(c: &mut berth::config::Config) {
    c.egress.allow_private = vec!["127.0.0.0/8".into()];
    let mut plans = berth_core::plan::default_plans();
    if let Some(free) = plans.get_mut("free") {
        free.requests_per_minute = 100_000;
    }
    c.plans = plans;
}

/// A server whose egress guard lets it reach the mock MCP server on loopback.
async fn start_sqlite() -> TestServer {
    TestServer::start_with(Backend::Sqlite, isolation_config).await
}

/// The same on a fresh PostgreSQL database, or `None` without PostgreSQL.
async fn start_postgres() -> Option<TestServer> {
    let db = pg_test_database().await?;
    Some(TestServer::start_with(Backend::Postgres(db), isolation_config).await)
}

fn rand_suffix() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().r#gen::<u32>())
}

/// Every route of the server. Keep in step with the router: the coverage test fails
/// otherwise.
fn table() -> Vec<Case> {
    use Access::*;
    use Param::*;
    vec![
        case("GET", "/healthz", Public, None, Option::None),
        case("GET", "/readyz", Public, None, Option::None),
        case("GET", "/openapi.json", Public, None, Option::None),
        case("GET", "/metrics", Operator, None, Option::None),
        case("POST", "/v1/tenants", Operator, None, Some(tenant_body)),
        case("GET", "/v1/tenants", Operator, None, Option::None),
        case("GET", "/v1/admin/usage", Operator, None, Option::None),
        case("GET", "/v1/tenants/{id}", Operator, TenantId, Option::None),
        case(
            "PATCH",
            "/v1/tenants/{id}",
            Operator,
            TenantId,
            Some(patch_body),
        ),
        case(
            "DELETE",
            "/v1/tenants/{id}",
            Operator,
            TenantId,
            Option::None,
        ),
        case(
            "POST",
            "/v1/tenants/{id}/keys",
            Operator,
            TenantId,
            Some(key_body),
        ),
        case("GET", "/v1/me", AnyTenantKey("viewer"), None, Option::None),
        case("POST", "/v1/keys", Tenant("admin"), None, Some(key_body)),
        case("GET", "/v1/keys", Tenant("admin"), None, Option::None),
        case(
            "DELETE",
            "/v1/keys/{id}",
            Tenant("admin"),
            KeyId,
            Option::None,
        ),
        case("GET", "/v1/secrets", Tenant("viewer"), None, Option::None),
        case(
            "PUT",
            "/v1/secrets/{name}",
            Tenant("developer"),
            SecretName,
            Some(secret_body),
        ),
        case(
            "DELETE",
            "/v1/secrets/{name}",
            Tenant("developer"),
            SecretName,
            Option::None,
        ),
        case("GET", "/v1/audit", Tenant("viewer"), None, Option::None),
        case(
            "GET",
            "/v1/audit/verify",
            Tenant("viewer"),
            None,
            Option::None,
        ),
        case("GET", "/v1/policy", Tenant("viewer"), None, Option::None),
        case(
            "PUT",
            "/v1/policy",
            Tenant("admin"),
            None,
            Some(policy_body),
        ),
        case("GET", "/v1/providers", Tenant("viewer"), None, Option::None),
        case(
            "GET",
            "/v1/providers/{name}",
            Tenant("viewer"),
            ProviderName,
            Option::None,
        ),
        case(
            "PUT",
            "/v1/providers/{name}",
            Tenant("admin"),
            ProviderName,
            Some(provider_body),
        ),
        case(
            "DELETE",
            "/v1/providers/{name}",
            Tenant("admin"),
            ProviderName,
            Option::None,
        ),
        case("GET", "/v1/usage", Tenant("viewer"), None, Option::None),
        case(
            "POST",
            "/v1/chat/completions",
            AnyTenantKey("invoker"),
            None,
            Some(chat_body),
        ),
        case(
            "POST",
            "/v1/messages",
            AnyTenantKey("invoker"),
            None,
            Some(messages_body),
        ),
        case(
            "POST",
            "/v1/embeddings",
            AnyTenantKey("invoker"),
            None,
            Some(embeddings_body),
        ),
        case(
            "GET",
            "/v1/models",
            AnyTenantKey("viewer"),
            None,
            Option::None,
        ),
        case("GET", "/v1/agents", Tenant("viewer"), None, Option::None),
        case(
            "POST",
            "/v1/agents/{name}/versions",
            Tenant("developer"),
            AgentName,
            Some(deploy_body),
        ),
        case(
            "GET",
            "/v1/agents/{name}",
            Tenant("viewer"),
            AgentName,
            Option::None,
        ),
        case(
            "DELETE",
            "/v1/agents/{name}",
            Tenant("developer"),
            AgentName,
            Option::None,
        ),
        case(
            "GET",
            "/v1/agents/{name}/versions",
            Tenant("viewer"),
            AgentName,
            Option::None,
        ),
        case(
            "GET",
            "/v1/agents/{name}/versions/{v}",
            Tenant("viewer"),
            AgentName,
            Option::None,
        ),
        case(
            "GET",
            "/v1/agents/{name}/traffic",
            Tenant("viewer"),
            AgentName,
            Option::None,
        ),
        case(
            "PUT",
            "/v1/agents/{name}/traffic",
            Tenant("developer"),
            AgentName,
            Some(traffic_body),
        ),
        case(
            "POST",
            "/v1/agents/{name}/rollback",
            Tenant("developer"),
            AgentName,
            Some(rollback_body),
        ),
        case(
            "POST",
            "/v1/agents/{name}/runs",
            Tenant("invoker"),
            AgentName,
            Some(run_body),
        ),
        case(
            "GET",
            "/v1/runs",
            AnyTenantKey("viewer"),
            None,
            Option::None,
        ),
        case(
            "GET",
            "/v1/runs/{id}",
            AnyTenantKey("viewer"),
            RunId,
            Option::None,
        ),
        case(
            "GET",
            "/v1/runs/{id}/trace",
            AnyTenantKey("viewer"),
            RunId,
            Option::None,
        ),
        case(
            "GET",
            "/v1/usage/summary",
            Tenant("viewer"),
            None,
            Option::None,
        ),
        case(
            "GET",
            "/v1/invoices/{month}",
            Tenant("viewer"),
            Month,
            Option::None,
        ),
        case(
            "GET",
            "/v1/runs/{id}/events",
            AnyTenantKey("viewer"),
            RunId,
            Option::None,
        ),
        case(
            "POST",
            "/v1/runs/{id}/cancel",
            AnyTenantKey("invoker"),
            RunId,
            Option::None,
        ),
        case(
            "GET",
            "/v1/approvals",
            AnyTenantKey("viewer"),
            None,
            Option::None,
        ),
        case(
            "POST",
            "/v1/approvals/{id}",
            AnyTenantKey("invoker"),
            ApprovalId,
            Some(decide_body),
        ),
        case(
            "GET",
            "/v1/threads/{id}",
            AnyTenantKey("viewer"),
            ThreadId,
            Option::None,
        ),
        case(
            "DELETE",
            "/v1/threads/{id}",
            AnyTenantKey("invoker"),
            ThreadId,
            Option::None,
        ),
        case(
            "POST",
            "/v1/mcp-servers",
            Tenant("developer"),
            None,
            Some(mcp_server_body),
        ),
        case(
            "GET",
            "/v1/mcp-servers",
            Tenant("viewer"),
            None,
            Option::None,
        ),
        case(
            "DELETE",
            "/v1/mcp-servers/{name}",
            Tenant("developer"),
            McpServer,
            Option::None,
        ),
        case(
            "POST",
            "/v1/mcp-servers/{name}/refresh",
            Tenant("developer"),
            McpServer,
            Option::None,
        ),
        case(
            "GET",
            "/v1/tools",
            AnyTenantKey("viewer"),
            None,
            Option::None,
        ),
        case(
            "POST",
            "/mcp",
            AnyTenantKey("invoker"),
            None,
            Some(mcp_list_body),
        ),
    ]
}

const ROLES: [&str; 4] = ["viewer", "invoker", "developer", "admin"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap()
}

/// One tenant with a key of every role and an agent-restricted key.
struct Tenant {
    id: String,
    name: String,
    keys: Vec<(String, String, String)>, // (role, key id, token)
    restricted: String,
}

impl Tenant {
    fn token(&self, role: &str) -> &str {
        &self.keys.iter().find(|k| k.0 == role).unwrap().2
    }
}

async fn tenant(server: &TestServer, name: &str) -> Tenant {
    let id = server.create_tenant(name).await;
    let mut keys = Vec::new();
    for role in ROLES {
        let (kid, tok) = server.create_key(&id, role).await;
        keys.push((role.to_owned(), kid, tok));
    }
    let a = server
        .call(
            "POST",
            &format!("/v1/tenants/{id}/keys"),
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "one-agent", "role": "admin", "agent": "support"})),
        )
        .await;
    assert_eq!(a.status, 201);
    let t = Tenant {
        id,
        name: name.to_owned(),
        keys,
        restricted: a.body["key"].as_str().unwrap().to_owned(),
    };
    // The secret that the provider cases name.
    let s = server
        .call(
            "PUT",
            "/v1/secrets/ISO_KEY",
            Some(t.token("admin")),
            Some(json!({"value": "sk-iso"})),
        )
        .await;
    assert_eq!(s.status, 204);
    t
}

/// Starts a run of agent "support". Runs resumed in the background by earlier approval
/// decisions may still hold the tenant's two run slots (plan free): a 429 is waited out,
/// not mistaken for an answer.
async fn start_run(server: &TestServer, token: &str, body: Value) -> berth_testkit::Answer {
    for _ in 0..50 {
        let r = server
            .call(
                "POST",
                "/v1/agents/support/runs",
                Some(token),
                Some(body.clone()),
            )
            .await;
        if r.status != 429 {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the tenant's run slots never freed up");
}

/// A fresh resource of `param`'s kind inside `tenant`, so destructive calls have a target.
async fn fresh(server: &TestServer, tenant: &Tenant, param: Param) -> String {
    fresh_as(server, tenant, param, tenant.token("admin")).await
}

/// The same, with runs (and so approvals) started by `starter`: an invoker decides only
/// the approvals of its own runs.
async fn fresh_as(server: &TestServer, tenant: &Tenant, param: Param, starter: &str) -> String {
    match param {
        Param::None => String::new(),
        Param::Month => berth_core::clock::rfc3339(berth_core::clock::now_ms())[..7].to_owned(),
        Param::TenantId => {
            server
                .create_tenant(&format!("fresh-{}", rand_suffix()))
                .await
        }
        Param::KeyId => server.create_key(&tenant.id, "viewer").await.0,
        Param::ApprovalId => {
            let admin = tenant.token("admin");
            server
                .call(
                    "POST",
                    "/v1/agents/support/versions",
                    Some(admin),
                    Some(support_body()),
                )
                .await;
            let r = start_run(server, starter, json!({"input": "please call mock__echo"})).await;
            assert_eq!(r.status, 202, "{:?}", r.body);
            assert_eq!(r.body["status"], "waiting_approval");
            let run = r.body["id"].as_str().unwrap();
            let list = server.get(&format!("/v1/approvals?run={run}"), admin).await;
            list.body["data"][0]["id"].as_str().unwrap().to_owned()
        }
        Param::RunId | Param::ThreadId => {
            // On agent "support", the one the tenant's restricted key may use.
            let admin = tenant.token("admin");
            server
                .call(
                    "POST",
                    "/v1/agents/support/versions",
                    Some(admin),
                    Some(support_body()),
                )
                .await;
            let r = start_run(server, starter, json!({"input": "hi", "thread": "new"})).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            let field = if param == Param::RunId {
                "id"
            } else {
                "thread"
            };
            r.body[field].as_str().unwrap().to_owned()
        }
        Param::AgentName => {
            let name = format!("a{}", rand_suffix());
            let a = server
                .call(
                    "POST",
                    &format!("/v1/agents/{name}/versions"),
                    Some(tenant.token("admin")),
                    Some(deploy_body(&name)),
                )
                .await;
            assert_eq!(a.status, 201, "{:?}", a.body);
            name
        }
        Param::ProviderName => {
            let name = format!("p{}", rand_suffix());
            let a = server
                .call(
                    "PUT",
                    &format!("/v1/providers/{name}"),
                    Some(tenant.token("admin")),
                    Some(provider_body("")),
                )
                .await;
            assert_eq!(a.status, 200, "{:?}", a.body);
            name
        }
        Param::McpServer => {
            let name = format!("m{}", rand_suffix());
            let a = server
                .call(
                    "POST",
                    "/v1/mcp-servers",
                    Some(tenant.token("admin")),
                    Some(json!({"name": name, "url": mock_mcp_url()})),
                )
                .await;
            assert_eq!(a.status, 201, "{:?}", a.body);
            name
        }
        Param::SecretName => {
            let name = format!("S{}", rand_suffix());
            let a = server
                .call(
                    "PUT",
                    &format!("/v1/secrets/{name}"),
                    Some(tenant.token("admin")),
                    Some(secret_body("")),
                )
                .await;
            assert_eq!(a.status, 204);
            name
        }
    }
}

/// Puts `value` in the first `{…}` of `path`; a `{v}` (a version) becomes 1.
fn fill(path: &str, value: &str) -> String {
    let path = path.replace("{v}", "1");
    match (path.find('{'), path.find('}')) {
        (Some(a), Some(b)) => format!("{}{}{}", &path[..a], value, &path[b + 1..]),
        _ => path,
    }
}

/// The value `fill` put in `path` (what the body of a case may need to repeat).
fn path_value(template: &str, path: &str) -> String {
    let prefix = template.split('{').next().unwrap_or("");
    path.strip_prefix(prefix)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn call(server: &TestServer, c: &Case, path: &str, token: Option<&str>) -> Answer {
    let body = c.body.map(|b| b(&path_value(c.path, path)));
    if c.path == "/mcp" {
        return mcp_call(server, token, body).await;
    }
    server.call(c.method, path, token, body).await
}

/// `POST /mcp` as an MCP client sends it: with [`MCP_HEADERS`].
async fn mcp_call(server: &TestServer, token: Option<&str>, body: Option<Value>) -> Answer {
    let mut req = server.http.post(format!("{}/mcp", server.url));
    for (k, v) in MCP_HEADERS {
        req = req.header(k, v);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    }
}

/// The names of the tools `token` sees: through `/v1/tools` and through `/mcp`'s
/// `tools/list`, which must agree.
async fn tool_names(server: &TestServer, token: &str) -> Vec<String> {
    let names = |list: &Value| -> Vec<String> {
        let mut n: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    let rest = server.get("/v1/tools", token).await;
    assert_eq!(rest.status, 200, "{:?}", rest.body);
    let mcp = mcp_call(server, Some(token), Some(mcp_list_body(""))).await;
    assert_eq!(mcp.status, 200, "{:?}", mcp.body);
    let (rest, mcp) = (
        names(&rest.body["data"]),
        names(&mcp.body["result"]["tools"]),
    );
    // `/v1/tools` also lists the built-in tools agents may name in their manifests; `/mcp`
    // offers those only where the policy names them (none here).
    let builtin = |n: &String| n.starts_with("mock__") || n.starts_with("sandbox__");
    assert!(!mcp.iter().any(builtin), "{mcp:?}");
    let rest_without_builtins: Vec<String> = rest.iter().filter(|n| !builtin(n)).cloned().collect();
    assert_eq!(
        rest_without_builtins, mcp,
        "/v1/tools and /mcp tools/list differ"
    );
    rest
}

fn assert_error_shape(a: &Answer, what: &str) {
    let e = &a.body["error"];
    assert!(
        e["type"].is_string() && e["code"].is_string() && e["message"].is_string(),
        "{what}: not an error shape: {:?}",
        a.body
    );
    let header = a
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(header.starts_with("req_"), "{what}: no x-request-id");
    assert_eq!(
        e["request_id"].as_str(),
        Some(header),
        "{what}: request_id differs from header"
    );
}

#[tokio::test]
async fn table_covers_every_route() {
    let server = TestServer::start().await;
    let doc = server.call("GET", "/openapi.json", None, None).await.body;
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                served.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let listed: BTreeSet<_> = table()
        .iter()
        .map(|c| (c.method.to_owned(), c.path.to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the isolation table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "table lists routes the server does not have: {stale:?}"
    );
    server.stop().await;
}

async fn roles_and_credentials(server: &TestServer) {
    let a = tenant(server, "iso-a").await;
    for c in table() {
        let what = format!("{} {}", c.method, c.path);
        // No credential: 401 unless public.
        let path = fill(c.path, &fresh(server, &a, c.param).await);
        let anon = call(server, &c, &path, None).await;
        if c.access == Access::Public {
            assert!(
                anon.status < 400,
                "{what} should be public, got {}",
                anon.status
            );
            continue;
        }
        assert_eq!(anon.status, 401, "{what} without a token");
        assert_error_shape(&anon, &what);
        let bogus = call(
            server,
            &c,
            &path,
            Some("bk_0000000000000000000000000000000000000000"),
        )
        .await;
        assert_eq!(bogus.status, 401, "{what} with an unknown key");

        match c.access {
            Access::Public => unreachable!(),
            Access::Operator => {
                for role in ROLES {
                    let r = call(server, &c, &path, Some(a.token(role))).await;
                    assert_eq!(r.status, 403, "{what} with a tenant {role} key");
                    assert_eq!(r.body["error"]["type"], "permission");
                }
                let path = fill(c.path, &fresh(server, &a, c.param).await);
                let ok = call(server, &c, &path, Some(OPERATOR_TOKEN)).await;
                assert!(
                    ok.status < 300,
                    "{what} as operator: {} {:?}",
                    ok.status,
                    ok.body
                );
            }
            Access::Tenant(min) | Access::AnyTenantKey(min) => {
                let op = call(server, &c, &path, Some(OPERATOR_TOKEN)).await;
                assert_eq!(op.status, 403, "{what} with the operator token");
                for role in ROLES {
                    let starter = a.token(if role == "invoker" { role } else { "admin" });
                    let path = fill(c.path, &fresh_as(server, &a, c.param, starter).await);
                    let r = call(server, &c, &path, Some(a.token(role))).await;
                    if rank(role) >= rank(min) {
                        assert!(
                            r.status < 300,
                            "{what} as {role}: {} {:?}",
                            r.status,
                            r.body
                        );
                    } else {
                        assert_eq!(r.status, 403, "{what} as {role} (needs {min})");
                        assert_eq!(
                            r.body["error"]["code"], "insufficient_role",
                            "{what} as {role}"
                        );
                    }
                }
                let path = fill(c.path, &fresh(server, &a, c.param).await);
                let r = call(server, &c, &path, Some(&a.restricted)).await;
                if matches!(c.access, Access::Tenant(_)) {
                    assert_eq!(r.status, 403, "{what} with an agent-restricted key");
                    assert_eq!(r.body["error"]["code"], "agent_restricted_key");
                } else {
                    assert!(
                        r.status < 300,
                        "{what} with an agent-restricted key: {}",
                        r.status
                    );
                }
            }
        }
    }
}

async fn cross_tenant(server: &TestServer) {
    let a = tenant(server, "cross-a").await;
    let b = tenant(server, "cross-b").await;
    // Things of B that must never show up in A's answers.
    let b_secret = fresh(server, &b, Param::SecretName).await;
    // Each tenant's own MCP server; its name is in every one of its tools' names.
    let a_mcp = fresh(server, &a, Param::McpServer).await;
    let b_mcp = fresh(server, &b, Param::McpServer).await;
    let mut b_markers: Vec<String> = vec![
        b.id.clone(),
        b.name.clone(),
        b_secret.clone(),
        b_mcp.clone(),
    ];
    b_markers.extend(b.keys.iter().map(|k| k.1.clone()));

    for c in table() {
        let what = format!("{} {}", c.method, c.path);
        let (Access::Tenant(_) | Access::AnyTenantKey(_)) = c.access else {
            continue;
        };
        if matches!(c.param, Param::None | Param::Month) {
            // Lists and singletons: A's admin sees nothing of B's.
            let path = fill(c.path, &fresh(server, &a, c.param).await);
            let r = call(server, &c, &path, Some(a.token("admin"))).await;
            assert!(r.status < 300, "{what}: {}", r.status);
            let text = r.body.to_string();
            for m in &b_markers {
                assert!(
                    !text.contains(m.as_str()),
                    "{what} as tenant A shows B's {m}"
                );
            }
            continue;
        }
        // A's admin addresses B's resource: answered exactly like a missing one.
        let target = fresh(server, &b, c.param).await;
        let r = call(server, &c, &fill(c.path, &target), Some(a.token("admin"))).await;
        let absent = match c.param {
            Param::KeyId => berth_core::Id::new(berth_core::IdKind::Key).into_string(),
            Param::TenantId => berth_core::TenantId::new().to_string(),
            _ => format!("Absent{}", rand_suffix()),
        };
        let missing = call(server, &c, &fill(c.path, &absent), Some(a.token("admin"))).await;
        let creates_own = (c.method == "PUT" && c.param != Param::AgentName)
            || (c.method == "POST" && c.path == "/v1/agents/{name}/versions");
        if creates_own {
            // PUT creates the name in A's own namespace; B's secret must be untouched.
            assert!(r.status < 300, "{what}");
        } else {
            assert_eq!(r.status, 404, "{what} on B's resource from A: {:?}", r.body);
            assert_eq!(r.body["error"]["type"], "not_found");
            assert_eq!(
                (missing.status, missing.body["error"]["code"].clone()),
                (404, r.body["error"]["code"].clone()),
                "{what}: other tenant's resource must look like a missing one"
            );
        }
        // And B's resource is still there, unchanged.
        match c.param {
            Param::KeyId => {
                let keys = server.get("/v1/keys", b.token("admin")).await;
                assert!(
                    keys.body.to_string().contains(&target),
                    "{what} removed B's key"
                );
                let listed = keys.body["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|k| k["id"] == target.as_str())
                    .unwrap()
                    .clone();
                assert!(listed["revoked_at"].is_null(), "{what} revoked B's key");
            }
            Param::AgentName => {
                let agent = server
                    .get(&format!("/v1/agents/{target}"), b.token("viewer"))
                    .await;
                assert_eq!(agent.status, 200, "{what} removed B's agent");
                assert_eq!(agent.body["latest_version"], 1, "{what} changed B's agent");
                assert_eq!(
                    agent.body["traffic"][0]["version"], 1,
                    "{what} changed B's traffic"
                );
            }
            Param::ProviderName => {
                let p = server
                    .get(&format!("/v1/providers/{target}"), b.token("viewer"))
                    .await;
                assert_eq!(p.status, 200, "{what} removed B's provider");
            }
            Param::McpServer => {
                let list = server.get("/v1/mcp-servers", b.token("viewer")).await;
                let mine = list.body["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["name"] == target.as_str())
                    .unwrap_or_else(|| panic!("{what} removed B's MCP server"))
                    .clone();
                assert_eq!(mine["status"], "healthy", "{what} changed B's MCP server");
            }
            Param::SecretName => {
                let secrets = server.get("/v1/secrets", b.token("admin")).await;
                assert!(
                    secrets.body.to_string().contains(&target),
                    "{what} removed B's secret"
                );
                let a_secrets = server.get("/v1/secrets", a.token("admin")).await;
                assert_eq!(a_secrets.status, 200);
            }
            _ => {}
        }
    }
    // Each tenant sees its own MCP server's tools and never the other's, through
    // /v1/tools and through its MCP endpoint alike, whatever the role or key.
    let own = |names: &[String], server: &str| {
        names.iter().any(|n| n.starts_with(&format!("{server}__")))
    };
    for (me, mine, theirs) in [(&a, &a_mcp, &b_mcp), (&b, &b_mcp, &a_mcp)] {
        for token in [
            me.token("invoker"),
            me.token("admin"),
            me.restricted.as_str(),
        ] {
            let names = tool_names(server, token).await;
            if token == me.restricted.as_str() {
                // Restricted to agent "support", whose manifest uses `mock__echo` only (and
                // which earlier cases may have deleted): never an MCP server's tool.
                assert!(
                    names.iter().all(|n| n == "mock__echo"),
                    "{}: {names:?}",
                    me.name
                );
            } else {
                assert!(
                    own(&names, mine),
                    "{} misses its own tools: {names:?}",
                    me.name
                );
            }
            assert!(
                !own(&names, theirs),
                "{} sees the other tenant's tools: {names:?}",
                me.name
            );
        }
        let servers = server.get("/v1/mcp-servers", me.token("viewer")).await;
        let text = servers.body.to_string();
        assert!(text.contains(mine.as_str()), "{text}");
        assert!(
            !text.contains(theirs.as_str()),
            "{} lists {theirs}",
            me.name
        );
    }
    // B's audit chain is intact and has no entry made by A.
    let audit = server.get("/v1/audit?limit=500", b.token("admin")).await;
    for m in a.keys.iter().map(|k| k.1.clone()) {
        assert!(
            !audit.body.to_string().contains(&m),
            "A's key {m} appears in B's audit log"
        );
    }
    assert_eq!(
        server.get("/v1/audit/verify", b.token("viewer")).await.body["ok"],
        true
    );
}

#[tokio::test]
async fn roles_and_credentials_on_sqlite() {
    let server = start_sqlite().await;
    roles_and_credentials(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn cross_tenant_on_sqlite() {
    let server = start_sqlite().await;
    cross_tenant(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn roles_and_credentials_on_postgres() {
    let Some(server) = start_postgres().await else {
        return;
    };
    roles_and_credentials(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn cross_tenant_on_postgres() {
    let Some(server) = start_postgres().await else {
        return;
    };
    cross_tenant(&server).await;
    server.stop().await;
}
