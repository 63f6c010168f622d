//! The example Rust agent (`examples/rust-agent`), built for wasm32-wasip2 and run against a
//! test host: every import it uses works (llm, tools, kv, thread, log, http, config), and
//! compile → artifact → load behaves across engines (a restart) and on bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use berth_component::{ErrorCode, LogLevel};
use berth_llm::Role;
use common::{TestHost, engine, example, grants, limits};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_agent_uses_every_import() {
    let engine = engine(None);
    let artifact = engine.compile(&example("rust-agent")).unwrap();
    let agent = engine.load(&artifact).unwrap();
    let host = Arc::new(TestHost::with_config(&[
        ("system", "You are the support agent."),
        ("status_url", "https://status.example.com/health"),
    ]));
    let grants = grants(
        &["https://status.example.com"],
        &["mock/echo", "mock/tools"],
        &["mock__*"],
    );

    let out = agent
        .run("where is order 42?", &limits(), &grants, host.clone())
        .await
        .unwrap();
    assert_eq!(
        out.output,
        "done with mock__echo answered {\"q\":\"order 42\"}\n\
         [runs: 1; tools: mock__echo; status: 200 all good]"
    );
    assert!(out.fuel_used > 0);
    assert!(out.compute_ms >= 1);
    assert!(out.memory_bytes > 0 && out.memory_bytes <= 64 << 20);

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
    // The first model turn saw the system prompt from config, the thread's history, the
    // input, and only the tools `tools.use` allows (crm__refund is filtered out).
    let chats = host.chats.lock().unwrap().clone();
    assert_eq!(
        chats[0].system.as_deref(),
        Some("You are the support agent.")
    );
    assert_eq!(chats[0].messages.len(), 3);
    assert_eq!(chats[0].messages[0].text_content(), "where is my order?");
    assert_eq!(chats[0].messages[2].text_content(), "where is order 42?");
    let offered: Vec<_> = chats[0].tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(offered, ["mock__echo"]);
    assert_eq!(
        chats[0].tools[0].parameters,
        serde_json::json!({"type": "object"})
    );
    // The second turn carries the assistant's call and the tool's result.
    assert_eq!(chats[1].messages.len(), 5);
    assert_eq!(chats[1].messages[3].role, Role::Assistant);
    assert_eq!(chats[1].messages[4].role, Role::Tool);
    assert!(
        host.logs()
            .contains(&(LogLevel::Info, "run number 1".to_owned()))
    );

    // The store persists between runs (another instance, same host store).
    let again = agent
        .run("and order 43?", &limits(), &grants, host.clone())
        .await
        .unwrap();
    assert!(again.output.contains("[runs: 2;"), "{}", again.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_host_outside_allowed_hosts_is_unavailable_to_the_agent() {
    let engine = engine(None);
    let agent = engine
        .load(&engine.compile(&example("rust-agent")).unwrap())
        .unwrap();
    let host = Arc::new(TestHost::with_config(&[(
        "status_url",
        "https://status.example.com/health",
    )]));
    let out = agent
        .run(
            "hi",
            &limits(),
            &grants(&[], &["mock/echo"], &[]),
            host.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        out.output,
        "echo: hi\n[runs: 1; tools: ; status: unavailable (denied)]"
    );
    assert!(!host.calls().iter().any(|c| c.starts_with("http")));
    assert!(!host.calls().iter().any(|c| c == "list_tools"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_load_after_a_restart_and_bad_ones_are_refused() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = example("rust-agent");
    let artifact = engine(Some(cache.path().to_owned()))
        .compile(&bytes)
        .unwrap();

    // A new engine (a restart): the artifact loads through wasmtime's code cache.
    let fresh = engine(Some(cache.path().to_owned()));
    let started = std::time::Instant::now();
    let agent = fresh.load(&artifact).unwrap();
    let cold_load = started.elapsed();
    let started = std::time::Instant::now();
    let again = fresh.load(&artifact).unwrap();
    assert!(
        started.elapsed() < cold_load,
        "a second load is a cache hit"
    );
    assert_eq!(agent.digest(), again.digest());
    assert_eq!(agent.digest().len(), 64);
    let host = Arc::new(TestHost::default());
    let out = agent
        .run("hi", &limits(), &grants(&[], &["mock/echo"], &[]), host)
        .await
        .unwrap();
    assert!(out.output.starts_with("echo: hi"));

    let mut tampered = artifact.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let e = engine(None).load(&tampered).err().unwrap();
    assert_eq!(e.code, ErrorCode::Invalid);
    assert!(e.message.contains("digest"), "{e}");

    let e = fresh.load(b"not an artifact").err().unwrap();
    assert_eq!(e.code, ErrorCode::Invalid);
    let e = fresh.compile(b"\0asm\x01\0\0\0").err().unwrap();
    assert_eq!(
        e.code,
        ErrorCode::Invalid,
        "a core module is not a component"
    );
    let e = fresh.compile(b"garbage").err().unwrap();
    assert_eq!(e.code, ErrorCode::Invalid);
}
