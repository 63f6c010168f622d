//! End-to-end tests of agents: deploys from JSON and from tar.gz bundles, immutable
//! content-addressed versions, hostile bundles, traffic splits and rollback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_testkit::TestServer;
use serde_json::{Value, json};

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

async fn upload(
    server: &TestServer,
    key: &str,
    agent: &str,
    body: Vec<u8>,
    query: &str,
) -> (u16, Value) {
    let resp = server
        .http
        .post(format!("{}/v1/agents/{agent}/versions{query}", server.url))
        .bearer_auth(key)
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn manifest(name: &str, system: &str) -> Value {
    json!({"manifest": {"name": name, "description": "helps", "model": {"name": "mock/echo"}, "prompt": {"system": system}}})
}

#[tokio::test]
async fn deploys_are_immutable_and_content_addressed() {
    let server = TestServer::start().await;
    let t = server.create_tenant("acme").await;
    let (_, key) = server.create_key(&t, "developer").await;
    let r = server
        .call(
            "POST",
            "/v1/agents/support/versions",
            Some(&key),
            Some(manifest("support", "v1")),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        (r.body["version"].as_i64(), r.body["promoted"].as_bool()),
        (Some(1), Some(true))
    );
    assert!(r.body["digest"].as_str().unwrap().starts_with("sha256:"));
    // The same content again: 200 with the existing version.
    let again = server
        .call(
            "POST",
            "/v1/agents/support/versions",
            Some(&key),
            Some(manifest("support", "v1")),
        )
        .await;
    assert_eq!(
        (again.status, again.body["version"].as_i64()),
        (200, Some(1))
    );
    // A bundle with the same agent, new content: version 2, not promoted.
    let toml = b"name = \"support\"\ndescription = \"helps\"\n[model]\nname = \"mock/echo\"\n[prompt]\nsystem = \"v2\"\n";
    let (status, body) = upload(
        &server,
        &key,
        "support",
        tar_gz(&[("agent.toml", toml), ("docs/readme.md", b"hi")]),
        "?promote=false",
    )
    .await;
    assert_eq!(
        (status, body["version"].as_i64(), body["promoted"].as_bool()),
        (201, Some(2), Some(false)),
        "{body}"
    );
    let agent = server.get("/v1/agents/support", &key).await;
    assert_eq!(
        (
            agent.body["latest_version"].as_i64(),
            agent.body["traffic"][0]["version"].as_i64()
        ),
        (Some(2), Some(1))
    );
    let versions = server.get("/v1/agents/support/versions", &key).await;
    assert_eq!(versions.body["data"].as_array().unwrap().len(), 2);
    let v2 = server.get("/v1/agents/support/versions/2", &key).await;
    assert_eq!(v2.body["manifest"]["prompt"]["system"], "v2");
    assert_eq!(
        server
            .get("/v1/agents/support/versions/9", &key)
            .await
            .code(),
        "version_not_found"
    );
    assert_eq!(
        server.get("/v1/agents", &key).await.body["data"][0]["name"],
        "support"
    );
    let audit = server.get("/v1/audit", &key).await;
    assert_eq!(audit.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn bad_manifests_and_hostile_bundles_are_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let t = server.create_tenant("acme").await;
    let (_, key) = server.create_key(&t, "developer").await;
    let cases = [
        (
            json!({"manifest": {"name": "bot", "model": {"name": "mock/echo"}, "colour": "red"}}),
            "manifest",
        ),
        (
            json!({"manifest": {"name": "bot", "model": {"name": "mock/echo"}, "limits": {"max_steps": 0}}}),
            "limits.max_steps",
        ),
        (
            json!({"manifest": {"name": "other", "model": {"name": "mock/echo"}}}),
            "name",
        ),
        (
            json!({"manifest": {"name": "bot", "model": {"name": "mock/echo"}, "component": {"path": "a.wasm"}}}),
            "component",
        ),
    ];
    for (body, param) in cases {
        let r = server
            .call(
                "POST",
                "/v1/agents/bot/versions",
                Some(&key),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (r.status, r.body["error"]["param"].as_str()),
            (422, Some(param)),
            "{body}: {:?}",
            r.body
        );
    }
    let good = b"name = \"bot\"\n[model]\nname = \"mock/echo\"\n";
    for (bundle, code) in [
        (b"plain text".to_vec(), "invalid_bundle"),
        (
            tar_gz(&[("../../etc/cron.d/x", b"x"), ("agent.toml", good)]),
            "invalid_bundle",
        ),
        (tar_gz(&[("readme.md", b"x")]), "invalid_bundle"),
        (
            tar_gz(&[(
                "agent.toml",
                b"name = \"bot\"\n[model]\nname = \"mock/echo\"\ntemprature = 1\n",
            )]),
            "invalid_manifest",
        ),
    ] {
        let (status, body) = upload(&server, &key, "bot", bundle, "").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some(code)),
            "{body}"
        );
    }
    // Over 50 MiB: 413 before anything is read into a version.
    let (status, _) = upload(&server, &key, "bot", vec![0x1f; 51 * 1024 * 1024], "").await;
    assert_eq!(status, 413);
    let r = server
        .http
        .post(format!("{}/v1/agents/bot/versions", server.url))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        server.get("/v1/agents/bot", &key).await.status,
        404,
        "nothing was stored"
    );
    assert!(
        server.get("/v1/agents", &key).await.body["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test]
async fn traffic_splits_pins_and_rollback() {
    let server = TestServer::start().await;
    let t = server.create_tenant("acme").await;
    let (key_id, key) = server.create_key(&t, "developer").await;
    for v in ["a", "b", "c"] {
        server
            .call(
                "POST",
                "/v1/agents/bot/versions",
                Some(&key),
                Some(manifest("bot", v)),
            )
            .await;
    }
    // Nothing to roll back to yet? v3 replaced v2 which replaced v1: v2 held all before v3.
    let put = |body: Value| server.call("PUT", "/v1/agents/bot/traffic", Some(&key), Some(body));
    for (body, code) in [
        (
            json!({"split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 40}]}),
            "invalid_traffic",
        ),
        (json!({"split": []}), "invalid_traffic"),
        (
            json!({"split": [{"version": 1, "weight": 50}, {"version": 1, "weight": 50}]}),
            "invalid_traffic",
        ),
        (
            json!({"split": [{"version": 7, "weight": 100}]}),
            "unknown_version",
        ),
        (
            json!({"split": [{"version": 1, "weight": 100}], "pins": [{"key": "nope", "version": 1}]}),
            "invalid_traffic",
        ),
    ] {
        let r = put(body.clone()).await;
        assert_eq!((r.status, r.code()), (422, code), "{body}");
    }
    let r = put(json!({"split": [{"version": 3, "weight": 90}, {"version": 2, "weight": 10}], "pins": [{"key": key_id, "version": 1}]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let traffic = server.get("/v1/agents/bot/traffic", &key).await;
    assert_eq!(traffic.body["split"].as_array().unwrap().len(), 2);
    assert_eq!(traffic.body["pins"][0]["version"], 1);
    // Rollback with no target: back to v3, which held all traffic before the split.
    let r = server
        .call("POST", "/v1/agents/bot/rollback", Some(&key), None)
        .await;
    assert_eq!(
        (
            r.status,
            r.body["split"][0]["version"].as_i64(),
            r.body["split"][0]["weight"].as_i64()
        ),
        (200, Some(3), Some(100)),
        "{:?}",
        r.body
    );
    // To an explicit version; then the default target is the one before it.
    let r = server
        .call(
            "POST",
            "/v1/agents/bot/rollback",
            Some(&key),
            Some(json!({"to": 1})),
        )
        .await;
    assert_eq!(r.body["split"][0]["version"], 1);
    let r = server
        .call("POST", "/v1/agents/bot/rollback", Some(&key), None)
        .await;
    assert_eq!(r.body["split"][0]["version"], 3);
    let r = server
        .call(
            "POST",
            "/v1/agents/bot/rollback",
            Some(&key),
            Some(json!({"to": 42})),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "unknown_version"));
    // A first version has nothing to roll back to.
    server
        .call(
            "POST",
            "/v1/agents/fresh/versions",
            Some(&key),
            Some(manifest("fresh", "x")),
        )
        .await;
    let r = server
        .call("POST", "/v1/agents/fresh/rollback", Some(&key), None)
        .await;
    assert_eq!((r.status, r.code()), (409, "nothing_to_roll_back"));
    // A viewer reads but cannot move traffic; a key for another agent cannot even read.
    let (_, viewer) = server.create_key(&t, "viewer").await;
    assert_eq!(
        server.get("/v1/agents/bot/traffic", &viewer).await.status,
        200
    );
    assert_eq!(
        server
            .call("POST", "/v1/agents/bot/rollback", Some(&viewer), None)
            .await
            .status,
        403
    );
    let other = server
        .call(
            "POST",
            "/v1/keys",
            Some(&server.create_key(&t, "admin").await.1),
            Some(json!({"name": "o", "role": "developer", "agent": "fresh"})),
        )
        .await;
    let other = other.body["key"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/v1/agents/fresh", &other).await.status, 200);
    assert_eq!(
        server.get("/v1/agents/bot", &other).await.code(),
        "agent_restricted_key"
    );
    // Deleting removes versions and traffic.
    assert_eq!(
        server
            .call("DELETE", "/v1/agents/bot", Some(&key), None)
            .await
            .status,
        204
    );
    assert_eq!(
        server.get("/v1/agents/bot/versions", &key).await.status,
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn a_key_restricted_to_an_agent_only_invokes_it() {
    let server = TestServer::start().await;
    let t = server.create_tenant("acme").await;
    let (_, admin) = server.create_key(&t, "admin").await;
    let manifest = |system: &str| json!({"manifest": {"name": "bot", "model": {"name": "mock/echo"}, "prompt": {"system": system}}});
    let first = server
        .call(
            "POST",
            "/v1/agents/bot/versions",
            Some(&admin),
            Some(manifest("one")),
        )
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    // Even given the admin role, a key restricted to `bot` may not change it.
    let made = server
        .call(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(json!({"name": "bot-admin", "role": "admin", "agent": "bot"})),
        )
        .await;
    let restricted = made.body["key"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        ("POST", "/v1/agents/bot/versions", Some(manifest("two"))),
        (
            "PUT",
            "/v1/agents/bot/traffic",
            Some(json!({"split": [{"version": 1, "weight": 100}]})),
        ),
        ("POST", "/v1/agents/bot/rollback", None),
        ("DELETE", "/v1/agents/bot", None),
    ] {
        let r = server.call(method, path, Some(&restricted), body).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "agent_restricted_key"),
            "{method} {path}: {:?}",
            r.body
        );
    }
    let versions = server.get("/v1/agents/bot/versions", &admin).await;
    assert_eq!(versions.body["data"].as_array().unwrap().len(), 1);
    // It still reads and invokes its agent.
    assert_eq!(server.get("/v1/agents/bot", &restricted).await.status, 200);
    let run = server
        .call(
            "POST",
            "/v1/agents/bot/runs",
            Some(&restricted),
            Some(json!({"input": "hi"})),
        )
        .await;
    assert_eq!(run.status, 200, "{:?}", run.body);
    server.stop().await;
}
