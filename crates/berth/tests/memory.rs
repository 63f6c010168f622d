//! A run's memory is bounded by a small multiple of its input (issue 14, item 19): the
//! input is held in the prompt, the trace, the thread, the events and the data-loss
//! screening, and each copy costs. Alone in its test binary; the peak resident memory
//! (`VmHWM`) is reset before each measured run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_testkit::TestServer;
use serde_json::json;

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Resets the peak (`VmHWM`) to the current resident size, so the next reading is the
/// peak since now; answers the resident size at the reset.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    status_kib("VmRSS:")
}

/// The most a run's peak memory may grow per byte of its input.
const LIMIT: f64 = 60.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_input_costs_a_small_multiple_of_its_size_and_a_larger_one_is_refused() {
    let server = TestServer::start().await;
    let t = server.create_tenant("mem").await;
    let (_, key) = server.create_key(&t, "admin").await;
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&key),
            Some(json!({"dlp": {"detect": ["email", "credit_card"], "on_llm_output": "redact"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = server
        .call(
            "POST",
            "/v1/agents/echo/versions",
            Some(&key),
            Some(json!({"manifest": {"name": "echo", "model": {"name": "mock/echo", "max_tokens": 1_000_000}}})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let run = |input: String| {
        let (server, key) = (&server, &key);
        async move {
            server
                .call(
                    "POST",
                    "/v1/agents/echo/runs",
                    Some(key),
                    Some(json!({"input": input, "thread": "new"})),
                )
                .await
        }
    };
    // Warm up every path once, so the peak below is the large run's.
    let warm = run("hello there ".repeat(1000)).await;
    assert_eq!(warm.status, 200, "{:?}", warm.body);
    let before = reset_peak();
    let input_kib = 1000;
    let big =
        "lorem ipsum dolor sit amet, consectetur adipiscing elit\n".repeat(input_kib * 1024 / 56);
    let r = run(big.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body["error"]);
    assert_eq!(r.body["status"], "succeeded", "{:?}", r.body["error"]);
    let grown = status_kib("VmHWM:").saturating_sub(before);
    let ratio = grown as f64 / input_kib as f64;
    println!("peak RSS grew {grown} KiB for a {input_kib} KiB input: {ratio:.1}x");
    assert!(
        ratio < LIMIT,
        "a {input_kib} KiB input made the peak grow {grown} KiB ({ratio:.1}x)"
    );
    // Without data-loss rules the answer is streamed to followers as it comes.
    let r = server
        .call("PUT", "/v1/policy", Some(&key), Some(json!({})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let before = reset_peak();
    let r = run(big.replace("lorem", "Lorem")).await;
    assert_eq!(r.body["status"], "succeeded", "{:?}", r.body["error"]);
    let grown = status_kib("VmHWM:").saturating_sub(before);
    let ratio = grown as f64 / input_kib as f64;
    println!("unscreened: peak RSS grew {grown} KiB for a {input_kib} KiB input: {ratio:.1}x");
    assert!(
        ratio < LIMIT,
        "a {input_kib} KiB input made the peak grow {grown} KiB ({ratio:.1}x)"
    );
    // Past `[runs] max_input_kb` (1 MiB by default) the input is refused up front.
    let r = run("x".repeat(1024 * 1024 + 1)).await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert_eq!(r.body["error"]["param"], "input");
    server.stop().await;
}
