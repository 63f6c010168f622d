//! Clients that never read a streamed answer cost bounded memory (issue 14, item 27).
//! Alone in its test binary: it measures the process's resident memory, which the other
//! hostile tests (64 MiB bodies) would swell if they ran beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_testkit::{Backend, TestServer};
use serde_json::json;
use std::time::{Duration, Instant};

/// Issue 14, item 27: clients that ask for an endless streamed answer (64 MiB from the
/// upstream) and never read it do not make the server buffer it: the stream is pulled
/// only as fast as the client takes it, so memory stays bounded and others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_a_stream_cost_bounded_memory() {
    use tokio::io::AsyncWriteExt;
    let mock = berth_testkit::mock_llm::MockUpstream::start().await;
    let url = mock.url.clone();
    let server = TestServer::start_with(Backend::Sqlite, move |c| {
        c.providers.push(berth::config::ProviderConfig {
            name: "up".into(),
            kind: "openai".into(),
            base_url: Some(url),
            api_key_env: None,
            timeout: Some("60s".into()),
            api_key: Some("sk-upstream".into()),
        });
    })
    .await;
    let t = server.create_tenant("reader").await;
    let (_, key) = server.create_key(&t, "admin").await;
    let other = server.create_tenant("bystander").await;
    let (_, other_key) = server.create_key(&other, "admin").await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let before = berth_testkit::rss_kib();
    let body = json!({"model": "up/huge", "stream": true, "max_tokens": 1000,
                      "messages": [{"role": "user", "content": "everything"}]})
    .to_string();
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        idle.push(s); // and never read (past the status line, below)
    }
    // The streams did start: the first answers 200 (read just its first bytes).
    {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 12];
        idle[0].read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let me = server.get("/v1/me", &other_key).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "another tenant waited {:?} beside eight never-reading streams",
        started.elapsed()
    );
    let grown = berth_testkit::rss_kib().saturating_sub(before);
    println!("eight unread streams: RSS grew {grown} KiB");
    assert!(
        grown < 128 * 1024,
        "eight unread 64 MiB streams grew RSS by {grown} KiB"
    );
    drop(idle);
    server.stop().await;
}
