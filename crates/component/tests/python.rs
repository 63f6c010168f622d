//! The Python example agent (`examples/python-agent`, componentize-py) runs on the same host
//! with the same imports and the same answer as the Rust one. Opt-in, because building and
//! compiling an 18 MB interpreter component takes minutes in a debug build: set
//! `BERTH_TEST_COMPONENTIZE_PY` to a `componentize-py` (see `examples/python-agent`);
//! without it the test says it skipped. The compiled code is cached under the target
//! directory, so a second run is fast.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use berth_component::Limits;
use common::{TestHost, engine, grants};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn componentize_py() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("BERTH_TEST_COMPONENTIZE_PY")?);
    // Absolute, since the tool runs in the example's directory.
    Some(std::fs::canonicalize(&p).unwrap_or(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agent_uses_every_import() {
    let Some(tool) = componentize_py() else {
        eprintln!("skipped: set BERTH_TEST_COMPONENTIZE_PY to run it (see examples/python-agent)");
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-examples");
    let out = dir.join("python-agent.wasm");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let status = Command::new(tool)
        .current_dir(root.join("examples/python-agent"))
        .args([
            "-q",
            "-d",
            "../../crates/sdk/wit",
            "-w",
            "agent",
            "componentize",
            "app",
            "-o",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "componentize-py failed");

    let engine = engine(Some(dir.join("wasmtime-cache")));
    let agent = engine
        .load(&engine.compile(&std::fs::read(&out).unwrap()).unwrap())
        .unwrap();
    let host = Arc::new(TestHost::with_config(&[
        ("system", "You are the support agent."),
        ("status_url", "https://status.example.com/health"),
    ]));
    let grants = grants(
        &["https://status.example.com"],
        &["mock/echo"],
        &["mock__*"],
    );
    let limits = Limits {
        memory_mb: 256,
        cpu_ms: 60_000,
        timeout: Duration::from_secs(60),
    };
    let out = agent
        .run("where is order 42?", &limits, &grants, host.clone())
        .await
        .unwrap();
    assert_eq!(
        out.output,
        "done with mock__echo answered {\"q\":\"order 42\"}\n\
         [runs: 1; tools: mock__echo; status: 200 all good]"
    );
    assert_eq!(
        host.calls(),
        [
            "kv_get runs",
            "kv_set runs",
            "history",
            "list_tools",
            "chat mock/echo",
            "call_tool mock__echo",
            "chat mock/echo",
            "http GET https://status.example.com/health",
        ]
    );
    let chats = host.chats.lock().unwrap().clone();
    assert_eq!(
        chats[0].system.as_deref(),
        Some("You are the support agent.")
    );
    assert_eq!(chats[0].messages.len(), 3);
}
