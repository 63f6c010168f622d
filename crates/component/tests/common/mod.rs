//! Shared by the component tests: building the example components (a nested cargo in its
//! own target directory, so it never waits on the lock of the build running the tests), and
//! `TestHost`, an `AgentHost` that records every call and models the platform's egress
//! guard (private and loopback addresses refused) without any network.

#![allow(dead_code)] // each test binary uses a part
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use async_trait::async_trait;
use berth_component::{
    AgentHost, Engine, Grants, HostError, HttpError, HttpRequest, HttpResponse, Limits, LogLevel,
    Settings,
};
use berth_llm::{ChatRequest, ChatResponse, FinishReason, Message, Part, Role, ToolDef, Usage};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bytes of `examples/<name>`'s component, built for wasm32-wasip2 (release) into
/// `$CARGO_TARGET_DIR/wasm-examples` (or `target/wasm-examples`).
pub fn example(name: &str) -> Vec<u8> {
    static BUILT: Mutex<Vec<(String, Vec<u8>)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, bytes)) = built.iter().find(|(n, _)| n == name) {
        return bytes.clone();
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-examples");
    let manifest = root.join("examples").join(name).join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo for the example");
    assert!(
        status.success(),
        "building {} failed (is the target installed? rustup target add wasm32-wasip2)",
        manifest.display()
    );
    let file = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let bytes = std::fs::read(&file).expect("read the built component");
    built.push((name.to_owned(), bytes.clone()));
    bytes
}

/// A small engine for tests (its own code cache in `cache_dir`, if given).
pub fn engine(cache_dir: Option<PathBuf>) -> Engine {
    Engine::new(Settings {
        max_instances: 16,
        max_memory_mb: 512,
        cache_dir,
        ..Settings::default()
    })
    .unwrap()
}

pub fn limits() -> Limits {
    Limits {
        memory_mb: 64,
        cpu_ms: 2000,
        timeout: Duration::from_secs(20),
    }
}

pub fn grants(hosts: &[&str], models: &[&str], tools: &[&str]) -> Grants {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Grants {
        allowed_hosts: berth_component::AllowedHosts::new(&owned(hosts)),
        models: owned(models),
        tools: owned(tools),
    }
}

/// Records every call; answers like a tiny platform.
#[derive(Default)]
pub struct TestHost {
    /// One line per call: `chat`, `list_tools`, `call_tool NAME`, `kv_get KEY`, `http URL`…
    pub calls: Mutex<Vec<String>>,
    pub chats: Mutex<Vec<ChatRequest>>,
    pub kv: Mutex<HashMap<String, Vec<u8>>>,
    pub logs: Mutex<Vec<(LogLevel, String)>>,
    pub config: HashMap<String, String>,
    /// When set, `history` waits for a permit (to hold instances open).
    pub hold: Option<Arc<tokio::sync::Semaphore>>,
}

impl TestHost {
    pub fn with_config(pairs: &[(&str, &str)]) -> Self {
        TestHost {
            config: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..TestHost::default()
        }
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.logs.lock().unwrap().clone()
    }
}

/// The egress guard's rule, modelled: loopback, private, link-local and unspecified
/// addresses (and `localhost`) are refused.
fn egress_refuses(url: &url::Url) -> Option<String> {
    let ip = match url.host()? {
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            return Some("localhost".into());
        }
        url::Host::Domain(_) => return None,
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
    };
    let private = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    };
    private.then(|| format!("{ip} is not a public address"))
}

#[async_trait]
impl AgentHost for TestHost {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, HostError> {
        self.record(format!("chat {}", request.model));
        self.chats.lock().unwrap().push(request.clone());
        let last = request.messages.last();
        let content = match last {
            // After tool results: a final answer quoting them.
            Some(m) if m.role == Role::Tool => {
                let results: Vec<String> = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolResult { content, .. } => Some(content.clone()),
                        _ => None,
                    })
                    .collect();
                vec![Part::Text(format!("done with {}", results.join(" ")))]
            }
            // Tools on offer: ask for the first one.
            _ if !request.tools.is_empty() => vec![Part::ToolCall {
                id: "call_1".into(),
                name: request.tools[0].name.clone(),
                arguments: r#"{"q":"order 42"}"#.into(),
            }],
            _ => vec![Part::Text(format!(
                "echo: {}",
                last.map(Message::text_content).unwrap_or_default()
            ))],
        };
        let finish = if matches!(content[0], Part::ToolCall { .. }) {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        };
        Ok(ChatResponse {
            id: "resp_1".into(),
            model: request.model,
            content,
            finish,
            usage: Some(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cached_input_tokens: 0,
            }),
        })
    }

    async fn list_tools(&self) -> Vec<ToolDef> {
        self.record("list_tools".into());
        ["mock__echo", "crm__refund"]
            .iter()
            .map(|n| ToolDef {
                name: n.to_string(),
                description: None,
                parameters: serde_json::json!({"type": "object"}),
            })
            .collect()
    }

    async fn call_tool(&self, name: &str, arguments: &str) -> Result<String, HostError> {
        self.record(format!("call_tool {name}"));
        Ok(format!("{name} answered {arguments}"))
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.record(format!("kv_get {key}"));
        Ok(self.kv.lock().unwrap().get(key).cloned())
    }

    async fn kv_set(&self, key: &str, value: Vec<u8>) -> Result<(), HostError> {
        self.record(format!("kv_set {key}"));
        self.kv.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }

    async fn kv_delete(&self, key: &str) -> Result<(), HostError> {
        self.record(format!("kv_delete {key}"));
        self.kv.lock().unwrap().remove(key);
        Ok(())
    }

    async fn history(&self) -> Vec<Message> {
        self.record("history".into());
        if let Some(hold) = &self.hold {
            hold.acquire().await.unwrap().forget();
        }
        vec![
            Message::text(Role::User, "where is my order?"),
            Message::text(Role::Assistant, "it ships tomorrow"),
        ]
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.lock().unwrap().push((level, message.to_owned()));
    }

    async fn http(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.record(format!("http {} {}", request.method, request.url));
        if let Some(why) = egress_refuses(&request.url) {
            return Err(HttpError::Denied(format!("egress guard: {why}")));
        }
        Ok(HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"all good\n".to_vec(),
        })
    }

    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
}
