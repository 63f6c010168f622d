//! `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` in the environment must not carry tenant
//! traffic past the guard: a proxied request is resolved by the proxy, so the guard's
//! resolver would check nothing. Environment variables are process-wide, so the checks run
//! in a child process of this test binary with the proxy variables set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_egress::EgressGuard;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A TCP server that counts its connections and answers each with `200 ok`.
async fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn proxy_variables_do_not_bypass_the_guard() {
    let (proxy_port, proxied) = counting_server().await;
    let (target_port, direct) = counting_server().await;
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "child_with_proxy_variables",
            "--ignored",
            "--nocapture",
        ])
        .env("BERTH_EGRESS_TARGET_PORT", target_port.to_string())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        child.env(var, &proxy);
    }
    let out = child.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "the proxy carried tenant traffic"
    );
    assert_eq!(
        direct.load(Ordering::SeqCst),
        1,
        "the allowed call went direct"
    );
}

/// Run by `proxy_variables_do_not_bypass_the_guard` only, with every proxy variable set.
#[tokio::test]
#[ignore = "run in a child process with proxy variables set"]
async fn child_with_proxy_variables() {
    let target_port: u16 = std::env::var("BERTH_EGRESS_TARGET_PORT")
        .expect("started by proxy_variables_do_not_bypass_the_guard")
        .parse()
        .unwrap();
    assert!(std::env::var("HTTPS_PROXY").is_ok());
    let url = format!("http://localhost:{target_port}/");
    // Private destinations forbidden: the call is refused, whatever a proxy would do.
    let strict = EgressGuard::new(Vec::new()).client(Duration::from_secs(5));
    let refused = strict.get(&url).send().await;
    assert!(
        refused.is_err(),
        "a loopback destination was reached: {refused:?}"
    );
    // Loopback allowed: the call reaches the target itself, not the proxy.
    let open = EgressGuard::new(vec![
        "127.0.0.0/8".parse().unwrap(),
        "::1/128".parse().unwrap(),
    ])
    .client(Duration::from_secs(5));
    let answer = open.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}
