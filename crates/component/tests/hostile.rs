//! Hostile components (`examples/hostile-agent`): each limit breach ends its own instance
//! with a precise error code while a neighbour instance, running at the same time on the
//! same engine, succeeds; each capability is refused without its permission.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use berth_component::{ComponentError, Engine, ErrorCode, Grants, Limits, Loaded, RunOutput};
use common::{TestHost, engine, example, grants, limits};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The hostile component, compiled once for this test binary's shared engine.
fn shared() -> (Engine, Loaded) {
    static SHARED: OnceLock<(Engine, Loaded)> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let engine = engine(None);
            let artifact = engine.compile(&example("hostile-agent")).unwrap();
            let agent = engine.load(&artifact).unwrap();
            (engine, agent)
        })
        .clone()
}

/// The hostile component on `engine` (loaded from the shared artifact).
fn hostile(engine: &Engine) -> Loaded {
    static ARTIFACT: OnceLock<Vec<u8>> = OnceLock::new();
    let artifact = ARTIFACT.get_or_init(|| shared().0.compile(&example("hostile-agent")).unwrap());
    engine.load(artifact).unwrap()
}

async fn run(
    agent: &Loaded,
    input: &str,
    limits: &Limits,
    grants: &Grants,
) -> Result<RunOutput, ComponentError> {
    agent
        .run(input, limits, grants, Arc::new(TestHost::default()))
        .await
}

/// Runs `input` and, at the same time, a well-behaved neighbour that must succeed.
async fn with_neighbour(input: &str, limits: Limits) -> Result<RunOutput, ComponentError> {
    let (_engine, agent) = shared();
    let none = Grants::default();
    let bad = run(&agent, input, &limits, &none);
    let good = async {
        // Start while the hostile instance is busy, then check it is not slowed to a halt.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let out = run(&agent, "echo:neighbour", &common::limits(), &none).await;
        (out, started.elapsed())
    };
    let (bad, (good, took)) = tokio::join!(bad, good);
    assert_eq!(good.unwrap().output, "neighbour");
    assert!(took < Duration::from_secs(2), "the neighbour took {took:?}");
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_hits_cpu_limit() {
    let limits = Limits {
        cpu_ms: 100,
        ..limits()
    };
    let e = with_neighbour("loop", limits).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::CpuLimit, "{e}");
    assert_eq!(e.code.as_str(), "cpu_limit");
    assert!(e.message.contains("100 ms"), "{e}");
    assert_eq!(
        e.fuel_used,
        100 * berth_component::Settings::default().fuel_per_ms
    );
    assert_eq!(e.compute_ms, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_with_cpu_to_spare_hits_the_timeout() {
    let limits = Limits {
        cpu_ms: 600_000,
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let started = Instant::now();
    let e = with_neighbour("loop", limits).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(e.compute_ms > 0, "the time spent is still counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_memory_limit() {
    let limits = Limits {
        memory_mb: 16,
        ..limits()
    };
    let e = with_neighbour("bomb", limits).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::MemoryLimit, "{e}");
    assert!(e.message.contains("16 MiB"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_traps() {
    let e = with_neighbour("recurse", limits()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Trap, "{e}");
    assert!(e.message.contains("stack overflow"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_traps_with_its_message() {
    let e = with_neighbour("panic", limits()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Trap, "{e}");
    assert!(e.message.contains("panics on purpose"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_error_is_kept() {
    let e = with_neighbour("fail", limits()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::AgentError);
    assert_eq!(e.agent_code.as_deref(), Some("refused"));
    assert_eq!(e.message, "refused: the hostile agent refuses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_host_not_allowed_is_denied_inside_the_host_function() {
    let (_engine, agent) = shared();
    let host = Arc::new(TestHost::default());
    let grants = grants(&["https://api.example.com"], &[], &[]);
    for url in [
        "https://evil.example.net/steal",
        "http://api.example.com/",
        "https://api.example.com.evil.net/",
    ] {
        let out = agent
            .run(&format!("http:{url}"), &limits(), &grants, host.clone())
            .await
            .unwrap();
        assert!(out.output.starts_with("denied: "), "{url}: {}", out.output);
        assert!(out.output.contains("allowed_hosts"), "{}", out.output);
    }
    assert!(
        host.calls().is_empty(),
        "the host was never asked: {:?}",
        host.calls()
    );
    let out = agent
        .run(
            "http:https://api.example.com/v1",
            &limits(),
            &grants,
            host.clone(),
        )
        .await
        .unwrap();
    assert_eq!(out.output, "status 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_private_address_is_denied_by_the_egress_guard() {
    let (_engine, agent) = shared();
    let host = Arc::new(TestHost::default());
    // Even when the manifest lists them, the platform refuses private destinations.
    let grants = grants(
        &[
            "http://127.0.0.1:8080",
            "http://10.1.2.3",
            "http://localhost",
        ],
        &[],
        &[],
    );
    for url in [
        "http://127.0.0.1:8080/admin",
        "http://10.1.2.3/",
        "http://localhost/",
    ] {
        let out = agent
            .run(&format!("http:{url}"), &limits(), &grants, host.clone())
            .await
            .unwrap();
        assert!(
            out.output.starts_with("denied: egress guard: "),
            "{url}: {}",
            out.output
        );
    }
    assert_eq!(host.calls().len(), 3, "each reached the egress guard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_permission_no_tool_no_model() {
    let (_engine, agent) = shared();
    let host = Arc::new(TestHost::default());
    let none = Grants::default();
    let out = agent
        .run("tool:mock__echo", &limits(), &none, host.clone())
        .await
        .unwrap();
    assert_eq!(out.output, "tool error: denied");
    let out = agent
        .run("model:mock/echo", &limits(), &none, host.clone())
        .await
        .unwrap();
    assert_eq!(out.output, "model error: denied");
    assert!(host.calls().is_empty(), "{:?}", host.calls());

    let some = grants(&[], &["mock/echo"], &["mock__*"]);
    let out = agent
        .run("tool:crm__refund", &limits(), &some, host.clone())
        .await
        .unwrap();
    assert_eq!(out.output, "tool error: denied", "not in tools.use");
    let out = agent
        .run("model:openai/gpt-4o", &limits(), &some, host.clone())
        .await
        .unwrap();
    assert_eq!(out.output, "model error: denied", "not in [model]");
    let out = agent
        .run("tool:mock__echo", &limits(), &some, host.clone())
        .await
        .unwrap();
    assert_eq!(out.output, "tool ok: mock__echo answered {}");
    let out = agent
        .run("model:mock/echo", &limits(), &some, host.clone())
        .await
        .unwrap();
    assert_eq!(out.output, "model ok: mock/echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_are_refused() {
    let (_engine, agent) = shared();
    let out = run(&agent, "kv-big", &limits(), &Grants::default())
        .await
        .unwrap();
    assert_eq!(out.output, "kv error: too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn there_is_no_way_out_of_the_sandbox() {
    let (_engine, agent) = shared();
    let out = run(&agent, "escape", &limits(), &Grants::default())
        .await
        .unwrap();
    assert_eq!(
        out.output,
        "env=0 root=None passwd=false tcp=false dns=false"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_busy_and_recovers() {
    let engine = Engine::new(berth_component::Settings {
        max_instances: 2,
        max_memory_mb: 64,
        ..Default::default()
    })
    .unwrap();
    let agent = hostile(&engine);
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let host = Arc::new(TestHost {
        hold: Some(hold.clone()),
        ..TestHost::default()
    });
    let none = Grants::default();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (agent, host, none) = (agent.clone(), host.clone(), none.clone());
            tokio::spawn(async move { agent.run("hold", &limits(), &none, host).await })
        })
        .collect();
    while host.calls().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let e = run(&agent, "echo:x", &limits(), &none).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Busy, "{e}");
    hold.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().output, "history 2");
    }
    assert_eq!(
        run(&agent, "echo:x", &limits(), &none)
            .await
            .unwrap()
            .output,
        "x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_beyond_the_engine_are_refused() {
    let (_engine, agent) = shared();
    let huge = Limits {
        memory_mb: 100_000,
        ..limits()
    };
    let e = run(&agent, "echo:x", &huge, &Grants::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Invalid);
}
