//! The hostile tenant, end to end: every route of the router (read from `/openapi.json`, so a
//! new route is covered the day it lands) gets the bodies and headers an attacker sends:
//! invalid UTF-8, deep nesting, oversize bodies and headers, numbers past their limits,
//! control characters and NUL in strings. Each must get a clear 4xx and leave the server
//! serving another tenant, with the process's memory bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_testkit::{Backend, TestServer};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Every (method, path) of the router, with `{…}` placeholders filled with a plausible value.
async fn routes(server: &TestServer) -> Vec<(String, String)> {
    let doc = server.call("GET", "/openapi.json", None, None).await.body;
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let filled = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        match seg {
                            "{tenant}" | "{tenant_id}" | "{id}" if path.contains("tenants") => {
                                "ten_aaaaaaaaaaaaaaaaaaaa"
                            }
                            "{month}" => "2026-12",
                            _ => "support",
                        }
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            out.push((method.to_uppercase(), filled));
        }
    }
    assert!(out.len() > 30, "the router lists its routes: {out:?}");
    out
}

/// The bodies an attacker sends to a JSON endpoint.
fn hostile_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(20_000), "}".repeat(20_000));
    vec![
        ("invalid UTF-8", b"{\"name\": \"\xff\xfe\xc3\x28\"}".to_vec()),
        ("deeply nested array", deep.into_bytes()),
        ("deeply nested object", deep_obj.into_bytes()),
        ("truncated JSON", b"{\"name\": \"a".to_vec()),
        ("NaN", b"{\"name\": NaN, \"weight\": NaN}".to_vec()),
        (
            "numbers past their limits",
            br#"{"name": "x", "max_tokens": 1e308, "temperature": -1e308, "weight": -1, "limit": 18446744073709551616, "monthly_usd": -0.0}"#
                .to_vec(),
        ),
        (
            "NUL and control characters in strings",
            "{\"name\": \"a\\u0000b\", \"role\": \"admin\\u0007\", \"model\": \"mock/echo\\u0000\", \"input\": \"\\u0000\\u001b[2J\", \"agent\": \"support\\u0000\", \"url\": \"http://example.com/\\u0000\"}"
                .as_bytes()
                .to_vec(),
        ),
        ("a JSON string, not an object", b"\"just a string\"".to_vec()),
        ("a huge body", vec![b' '; 64 * 1024 * 1024]),
    ]
}

/// Another tenant's request still answers at once.
async fn others_are_served(server: &TestServer, victim: &str, after: &str) {
    let started = Instant::now();
    let me = server.get("/v1/me", victim).await;
    assert_eq!(me.status, 200, "after {after}: {:?}", me.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "after {after}, another tenant waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn every_route_refuses_hostile_bodies_cleanly_and_serves_other_tenants() {
    let server = TestServer::start_with(Backend::Sqlite, |_| {}).await;
    let attacker_tenant = server.create_tenant("attacker").await;
    let (_, attacker) = server.create_key(&attacker_tenant, "admin").await;
    let victim_tenant = server.create_tenant("victim").await;
    let (_, victim) = server.create_key(&victim_tenant, "admin").await;
    let routes = routes(&server).await;
    let baseline = berth_testkit::rss_kib();
    let mut failures = Vec::new();
    for (name, body) in hostile_bodies() {
        for (method, path) in &routes {
            if method == "GET" || method == "DELETE" {
                continue;
            }
            let token = if path.starts_with("/v1/tenants") {
                server.operator_token.clone()
            } else {
                attacker.clone()
            };
            let resp = server
                .http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", server.url),
                )
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.clone())
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            match resp {
                Ok(r) => {
                    let status = r.status().as_u16();
                    // A clear refusal: 4xx, never an internal error and never accepted.
                    if !(400..500).contains(&status) {
                        let text = r.text().await.unwrap_or_default();
                        failures.push(format!(
                            "{name}: {method} {path} -> {status}: {}",
                            text.chars().take(200).collect::<String>()
                        ));
                    }
                }
                // The server may cut a body it will not read (413 before the upload ends).
                Err(e) if name == "a huge body" && !e.is_timeout() => {}
                Err(e) => failures.push(format!("{name}: {method} {path} -> {e}")),
            }
        }
        others_are_served(&server, &victim, name).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The attacks above read and refused some 4 GiB in all; the process kept little of it.
    let grown = berth_testkit::rss_kib().saturating_sub(baseline);
    assert!(grown < 512 * 1024, "RSS grew by {grown} KiB");
    server.stop().await;
}

#[tokio::test]
async fn control_characters_are_refused_at_the_edge_on_sqlite() {
    control_characters_in_names_ids_and_models_are_refused_at_the_edge(TestServer::start().await)
        .await;
}

/// PostgreSQL refuses a NUL in text, so a NUL that got past the edge would poison the
/// writers' batches there.
#[tokio::test]
async fn control_characters_are_refused_at_the_edge_on_postgres() {
    let Some(server) = TestServer::start_postgres().await else {
        return;
    };
    control_characters_in_names_ids_and_models_are_refused_at_the_edge(server).await;
}

async fn control_characters_in_names_ids_and_models_are_refused_at_the_edge(server: TestServer) {
    let t = server.create_tenant("acme").await;
    let (_, admin) = server.create_key(&t, "admin").await;
    let nul = "a\u{0}b";
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/v1/tenants".into(),
            json!({"name": format!("evil{nul}"), "plan": "pro"}),
        ),
        (
            "POST",
            "/v1/keys".into(),
            json!({"name": format!("k{nul}"), "role": "viewer"}),
        ),
        (
            "POST",
            "/v1/agents/support/versions".into(),
            json!({"manifest": {"name": "support", "model": {"name": "mock/echo\u{0}"}}}),
        ),
        (
            "POST",
            "/v1/chat/completions".into(),
            json!({"model": "mock/echo\u{0}", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "POST",
            "/v1/messages".into(),
            json!({"model": "mock/echo\u{7}", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "POST",
            "/v1/embeddings".into(),
            json!({"model": "mock/embed\u{0}", "input": "hi"}),
        ),
        ("PUT", "/v1/secrets/A%00B".into(), json!({"value": "v"})),
    ];
    for (method, path, body) in cases {
        let token = if path == "/v1/tenants" {
            server.operator_token.clone()
        } else {
            admin.clone()
        };
        let r = server.call(method, &path, Some(&token), Some(body)).await;
        assert!(
            matches!(r.status, 400 | 404 | 413 | 422),
            "{method} {path}: {} {:?}",
            r.status,
            r.body
        );
    }
    // The writers were not poisoned: a normal call is metered and readable at once.
    let ok = server
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&admin),
            Some(json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage = server.get("/v1/usage", &admin).await;
        assert_eq!(usage.status, 200, "{:?}", usage.body);
        if usage.body["data"][0]["llm_calls"].as_u64() == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage never showed: {:?}",
            usage.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn oversize_headers_are_refused_and_the_server_goes_on() {
    let server = TestServer::start().await;
    let t = server.create_tenant("acme").await;
    let (_, admin) = server.create_key(&t, "admin").await;
    for (name, value) in [
        ("authorization", format!("Bearer {}", "x".repeat(200_000))),
        ("x-filler", "y".repeat(1_000_000)),
        ("berth-tags", "t,".repeat(100_000)),
    ] {
        let r = server
            .http
            .get(format!("{}/v1/me", server.url))
            .header(name, value)
            .send()
            .await;
        if let Ok(r) = r {
            assert!(
                (400..500).contains(&r.status().as_u16()),
                "{name}: {}",
                r.status()
            );
        }
    }
    assert_eq!(server.get("/v1/me", &admin).await.status, 200);
    server.stop().await;
}

/// Issue 14, item 18: connections that send nothing, or their headers a byte at a time
/// (slowloris), are closed after the header deadline; one address holds at most its share
/// of connections, so a flood of them from one address leaves the server reachable from
/// another (here 127.0.0.2, which the loopback interface answers too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off_and_cannot_take_every_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.http.header_read_timeout_secs = 1;
        c.http.max_connections_per_ip = 100;
    })
    .await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let t = server.create_tenant("acme").await;
    let (_, admin) = server.create_key(&t, "admin").await;
    // 300 connections from 127.0.0.1: the first 100 are held until their deadline, the rest
    // are closed at once. Half send nothing, half dribble a request line.
    let mut flood = Vec::new();
    for i in 0..300 {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /v1/me HTTP/1.1\r\nHost: x\r\n").await;
        }
        flood.push(s);
    }
    // Another address is served meanwhile, at once.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let url = &server.url;
    let started = Instant::now();
    let r = other
        .get(format!("{url}/v1/me"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "another address waited {:?}",
        started.elapsed()
    );
    // A slowloris keeps sending a byte every 300 ms: it is cut off at the header deadline.
    let mut slow = tokio::net::TcpStream::connect(&addr).await;
    if let Ok(s) = &mut slow {
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n").await;
    }
    // Every held connection is closed by the server within the deadline (plus slack).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = 0;
    for s in &mut flood {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            // End of stream, or an error answer (408) followed by the end.
            Ok(Ok(0) | Err(_)) => closed += 1,
            Ok(Ok(_)) => {
                if matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {
                    closed += 1;
                }
            }
            Err(_) => {}
        }
    }
    assert_eq!(
        closed,
        flood.len(),
        "connections left open past the deadline"
    );
    if let Ok(s) = &mut slow {
        let mut cut = false;
        for _ in 0..20 {
            if s.write_all(b"X").await.is_err() {
                cut = true;
                break;
            }
            let mut buf = [0u8; 512];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
            {
                cut = true;
                break;
            }
        }
        assert!(
            cut,
            "a slowloris kept its connection past the header deadline"
        );
    }
    // And the flooding address is served again once its connections are gone.
    assert_eq!(server.get("/v1/me", &admin).await.status, 200);
    server.stop().await;
}
