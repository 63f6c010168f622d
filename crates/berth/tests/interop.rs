//! Interop: the official OpenAI and Anthropic Python SDKs (tests/interop/test_sdks.py) run
//! against a real Berth in front of the mock upstream. `scripts/test` prepares the Python
//! environment and sets BERTH_TEST_PYTHON; without it the test is skipped, except under
//! CI=true, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth::config::ProviderConfig;
use berth_testkit::mock_llm::MockUpstream;
use berth_testkit::{Backend, TestServer};
use std::path::Path;

fn provider(name: &str, kind: &str, url: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind: kind.into(),
        base_url: Some(url.into()),
        api_key_env: None,
        timeout: Some("10s".into()),
        api_key: Some("sk-interop-platform-key".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_work_against_berth() {
    let Some(python) = std::env::var_os("BERTH_TEST_PYTHON") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("BERTH_TEST_PYTHON is not set: run the suite with scripts/test");
        }
        eprintln!("skipping SDK interop: BERTH_TEST_PYTHON not set (run scripts/test)");
        return;
    };
    let mock = MockUpstream::start().await;
    let url = mock.url.clone();
    let server = TestServer::start_with(Backend::Sqlite, move |c| {
        c.providers = vec![
            provider("up", "openai", &url),
            provider("anth", "anthropic", &url),
        ];
    })
    .await;
    let tenant = server.create_tenant("interop").await;
    let (_, key) = server.create_key(&tenant, "invoker").await;
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop");
    let out = tokio::process::Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .env("BERTH_URL", &server.url)
        .env("BERTH_KEY", &key)
        .output()
        .await
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "SDK interop tests failed:\n{stdout}\n{stderr}"
    );
    // Every SDK call went through metering.
    let rows = server
        .get("/v1/usage", &server.create_key(&tenant, "viewer").await.1)
        .await;
    assert!(
        rows.body["data"][0]["requests"].as_i64().unwrap() > 20,
        "{:?}",
        rows.body
    );
    server.stop().await;
}

/// Starts `tests/interop/mcp_upstream.py` (the official Python MCP SDK) on a free port and
/// waits for its `READY` line.
async fn python_upstream(python: &std::ffi::OsStr) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/mcp_upstream.py");
    let mut child = tokio::process::Command::new(python)
        .arg(&script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python MCP upstream");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "READY" {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(ready, Ok(true)),
        "the Python MCP upstream did not start"
    );
    (child, format!("http://127.0.0.1:{port}/mcp"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_mcp_sdk_as_upstream_and_as_client() {
    let Some(python) = std::env::var_os("BERTH_TEST_PYTHON") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("BERTH_TEST_PYTHON is not set: run the suite with scripts/test");
        }
        eprintln!("skipping MCP interop: BERTH_TEST_PYTHON not set (run scripts/test)");
        return;
    };
    let (_upstream, upstream_url) = python_upstream(&python).await;
    let mock = MockUpstream::start().await;
    let url = mock.url.clone();
    let server = TestServer::start_with(Backend::Sqlite, move |c| {
        c.egress.allow_private = vec!["127.0.0.0/8".into()];
        c.providers = vec![provider("up", "openai", &url)];
    })
    .await;
    let tenant = server.create_tenant("mcp-interop").await;
    let (_, admin) = server.create_key(&tenant, "admin").await;
    let (_, invoker) = server.create_key(&tenant, "invoker").await;
    let token = "pyshop-secret-9f3kQ2";
    let r = server
        .call(
            "PUT",
            "/v1/secrets/PYSHOP",
            Some(&admin),
            Some(serde_json::json!({"value": token})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = server
        .call(
            "POST",
            "/v1/mcp-servers",
            Some(&admin),
            Some(serde_json::json!({"name": "pyshop", "url": upstream_url,
                "headers": {"Authorization": {"secret": "PYSHOP", "prefix": "Bearer "}}})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    println!("Python upstream speaks {}", r.body["protocol_version"]);

    // An agent calls the Python server's tool.
    let args = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        r#"{"sku":"B7"}"#,
    );
    let r = server
        .call(
            "POST",
            "/v1/agents/stock/versions",
            Some(&admin),
            Some(serde_json::json!({"manifest": {"name": "stock",
                "model": {"name": format!("up/tools-args-{args}")},
                "tools": {"use": ["pyshop__lookup"]}}})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let run = server
        .call(
            "POST",
            "/v1/agents/stock/runs",
            Some(&invoker),
            Some(serde_json::json!({"input": "how many B7?"})),
        )
        .await;
    assert_eq!(run.status, 200, "{:?}", run.body);
    assert_eq!(
        run.body["output"], "tool result: sku B7: 3 in stock",
        "{:?}",
        run.body
    );

    // The Python client lists and calls tools through Berth's /mcp, both lifecycles; the
    // tenant's credential reached the upstream (it echoes it) and came back scrubbed.
    // Built-in tools are offered there because the policy names them.
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&admin),
            Some(serde_json::json!({"tools": {"allow": {"*": ["*", "mock__echo"]}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/test_mcp.py");
    let expect = serde_json::json!({"tools": ["pyshop__lookup", "pyshop__add", "pyshop__whoami", "mock__echo"],
                                    "whoami": "Bearer [REDACTED]"});
    let out = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .env("BERTH_URL", &server.url)
        .env("BERTH_MCP_KEY", &invoker)
        .env("BERTH_MCP_EXPECT", expect.to_string())
        .output()
        .await
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "MCP interop failed:\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("skipped"),
        "every MCP interop test ran:\n{stdout}"
    );
    server.stop().await;
}
