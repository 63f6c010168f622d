//! Test kit: a real Berth server on port 0 (SQLite or PostgreSQL) and an HTTP client for it.
//! Mock upstreams (LLM providers, MCP servers) join this crate as later features need them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test support: failing loudly is the point

pub mod mock_llm;
pub mod mock_mcp;
pub mod tcp_proxy;
pub mod wasm;

use berth::config::Config;
use serde_json::{Value, json};
use std::path::PathBuf;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use berth_meter::contract::{redis_test_url, unique_prefix};
pub use berth_store::contract::{PgTestDb, pg_test_database};

/// Which store a test server uses.
pub enum Backend {
    Sqlite,
    Postgres(PgTestDb),
}

/// A Berth server running in this process on 127.0.0.1:0.
pub struct TestServer {
    pub url: String,
    pub operator_token: String,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    pg: Option<PgTestDb>,
    _dir: tempfile::TempDir,
}

/// An answer: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub const OPERATOR_TOKEN: &str = "bop_test_operator_token_0123456789";

impl TestServer {
    /// A server on SQLite in a fresh temporary directory.
    pub async fn start() -> TestServer {
        Self::start_with(Backend::Sqlite, |_| {}).await
    }

    /// A server on a fresh PostgreSQL database, or `None` if PostgreSQL is not reachable
    /// (which fails the test under `CI=true`).
    pub async fn start_postgres() -> Option<TestServer> {
        let db = pg_test_database().await?;
        Some(Self::start_with(Backend::Postgres(db), |_| {}).await)
    }

    /// A server whose config `tweak` may adjust before start.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::defaults().expect("default config");
        config.listen = "127.0.0.1:0".to_owned();
        config.data_dir = dir.path().join("data");
        config.operator_token = Some(OPERATOR_TOKEN.to_owned());
        // Request logs would drown test output; RUST_LOG still overrides this.
        config.log.level = "error".to_owned();
        // The mock upstream's models (`up/slow-100`, `mine/llama-3`…) have no price of their
        // own, and calls under a hard budget (the free plan's cap) must be priced: tests
        // price them by a default (at mock/echo's rates); tests of unpriced models remove it.
        config.prices.insert(
            berth_meter::DEFAULT_PRICE_KEY.to_owned(),
            berth::config::PriceConfig {
                input: 1.0,
                output: 2.0,
                cached_input: Some(0.5),
            },
        );
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(db) => {
                config.database_url = Some(db.url.clone());
                Some(db)
            }
        };
        tweak(&mut config);
        let redactor = berth::logging::init(&config.log);
        let server = berth::start(&config, false, &redactor)
            .await
            .expect("server starts");
        let (tx, rx) = oneshot::channel::<()>();
        let url = server.url.clone();
        let handle = tokio::spawn(berth_api::serve(server.listener, server.state, async {
            let _ = rx.await;
        }));
        TestServer {
            url,
            operator_token: server.operator_token,
            data_dir: config.data_dir.clone(),
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
            pg,
            _dir: dir,
        }
    }

    /// The database URL of a PostgreSQL-backed server.
    pub fn pg_url(&self) -> Option<&str> {
        self.pg.as_ref().map(|d| d.url.as_str())
    }

    /// Sends a request with `token` (if any) and a JSON body (if any).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body read");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None).await
    }

    /// Creates a tenant as the operator; returns its id.
    pub async fn create_tenant(&self, name: &str) -> String {
        let a = self
            .call(
                "POST",
                "/v1/tenants",
                Some(OPERATOR_TOKEN),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(a.status, 201, "create tenant: {:?}", a.body);
        a.body["id"].as_str().expect("tenant id").to_owned()
    }

    /// Mints a key of `role` in `tenant` as the operator; returns (key id, token).
    pub async fn create_key(&self, tenant: &str, role: &str) -> (String, String) {
        let a = self
            .call(
                "POST",
                &format!("/v1/tenants/{tenant}/keys"),
                Some(OPERATOR_TOKEN),
                Some(json!({"name": format!("{role}-key"), "role": role})),
            )
            .await;
        assert_eq!(a.status, 201, "create key: {:?}", a.body);
        (
            a.body["id"].as_str().expect("id").to_owned(),
            a.body["key"].as_str().expect("key").to_owned(),
        )
    }

    /// Stops the server gracefully and drops its PostgreSQL database, if any.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        if let Some(db) = self.pg.take() {
            db.drop_now().await;
        }
    }
}

/// This process's resident memory in KiB (`VmRSS`): a server started by [`TestServer`] runs
/// in the test's own process, so memory tests read it here.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
