//! `mock-llm`: the test kit's mock LLM upstream as a standalone server, for benchmarks.
//! Usage: `mock-llm [ADDR] [LATENCY_MS]` (default 127.0.0.1:7800, 0 ms).

#![allow(clippy::expect_used)] // a benchmark tool: failing to bind should stop it loudly

use std::time::Duration;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7800".to_owned());
    let latency = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(0));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!(
        "mock-llm listening on http://{}/v1 (latency {latency:?})",
        listener.local_addr().expect("addr")
    );
    axum::serve(listener, berth_testkit::mock_llm::router_for_bench(latency))
        .await
        .expect("serve");
}
