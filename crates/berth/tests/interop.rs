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
