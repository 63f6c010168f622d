//! End-to-end tests of the foundation API: authentication (keys, JWT, operator), tenants,
//! keys, secrets, audit, and the answers to bad input. Each runs a real server on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use base64::Engine;
use berth_testkit::{Backend, OPERATOR_TOKEN, TestServer};
use serde_json::{Value, json};
use std::time::Duration;

async fn tenant_with_admin(server: &TestServer, name: &str) -> (String, String) {
    let id = server.create_tenant(name).await;
    let (_, key) = server.create_key(&id, "admin").await;
    (id, key)
}

#[tokio::test]
async fn me_reports_tenant_and_key() {
    let server = TestServer::start().await;
    let (id, key) = tenant_with_admin(&server, "acme").await;
    let me = server.get("/v1/me", &key).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["tenant"]["id"], id.as_str());
    assert_eq!(me.body["tenant"]["name"], "acme");
    assert_eq!(me.body["tenant"]["plan"], "free");
    assert_eq!(me.body["key"]["role"], "admin");
    // The Anthropic-style header works too.
    let resp = server
        .http
        .get(format!("{}/v1/me", server.url))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A malformed Authorization header is a clear 401.
    let resp = server
        .http
        .get(format!("{}/v1/me", server.url))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_credentials");
    server.stop().await;
}

#[tokio::test]
async fn keys_are_shown_once_stored_hashed_and_revoked_immediately() {
    let server = TestServer::start().await;
    let (_, admin) = tenant_with_admin(&server, "acme").await;
    let created = server
        .call(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(json!({"name": "ci", "role": "developer"})),
        )
        .await;
    assert_eq!(created.status, 201);
    let token = created.body["key"].as_str().unwrap().to_owned();
    let key_id = created.body["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("bk_") && token.len() > 60);
    assert_eq!(
        server.get("/v1/me", &token).await.body["key"]["role"],
        "developer"
    );

    let list = server.get("/v1/keys", &admin).await;
    assert!(
        !list.body.to_string().contains(&token),
        "list must never show a key"
    );
    assert!(
        list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none())
    );

    // The token is nowhere on disk: only its hash is stored.
    assert!(
        !data_dir_contains(&server, token.as_bytes()),
        "a key was written to disk in clear"
    );

    // Revocation takes effect on the very next request (the auth cache is warm here).
    for _ in 0..3 {
        assert_eq!(server.get("/v1/me", &token).await.status, 200);
    }
    let revoked = server
        .call("DELETE", &format!("/v1/keys/{key_id}"), Some(&admin), None)
        .await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.body["revoked_at"].is_string());
    let after = server.get("/v1/me", &token).await;
    assert_eq!(after.status, 401);
    assert_eq!(after.code(), "invalid_api_key");
    server.stop().await;
}

#[tokio::test]
async fn key_rules_roles_expiry_and_agent_restriction() {
    let server = TestServer::start().await;
    let (tenant, admin) = tenant_with_admin(&server, "acme").await;
    let (_, developer) = server.create_key(&tenant, "developer").await;
    // Only admins create keys.
    let r = server
        .call(
            "POST",
            "/v1/keys",
            Some(&developer),
            Some(json!({"name": "x", "role": "viewer"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "insufficient_role"));
    // Bad role, bad name, bad agent, past expiry: 422 naming the field.
    for (body, param) in [
        (json!({"name": "x", "role": "root"}), "role"),
        (json!({"name": "bad name", "role": "viewer"}), "name"),
        (
            json!({"name": "x", "role": "viewer", "agent": "Not_An_Agent"}),
            "agent",
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_at": "tomorrow"}),
            "expires_at",
        ),
    ] {
        let r = server
            .call("POST", "/v1/keys", Some(&admin), Some(body.clone()))
            .await;
        assert_eq!(r.status, 422, "{body}");
        assert_eq!(r.body["error"]["param"], param, "{body}");
    }
    // Expiry: works until the time, then 401 key_expired.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = server
        .call(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(json!({"name": "short", "role": "viewer", "expires_at": soon})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let short = r.body["key"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/v1/me", &short).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = server.get("/v1/me", &short).await;
    assert_eq!((r.status, r.code()), (401, "key_expired"));
    // A key restricted to one agent knows it, and cannot manage the tenant.
    let r = server
        .call(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(json!({"name": "bot", "role": "invoker", "agent": "support"})),
        )
        .await;
    let bot = r.body["key"].as_str().unwrap().to_owned();
    assert_eq!(
        server.get("/v1/me", &bot).await.body["key"]["agent"],
        "support"
    );
    assert_eq!(
        server.get("/v1/secrets", &bot).await.code(),
        "agent_restricted_key"
    );
    server.stop().await;
}

#[tokio::test]
async fn suspended_and_deleted_tenants_lose_access_at_once() {
    let server = TestServer::start().await;
    let (tenant, admin) = tenant_with_admin(&server, "acme").await;
    let (_, other_admin) = tenant_with_admin(&server, "other").await;
    server
        .call(
            "PUT",
            "/v1/secrets/TOKEN",
            Some(&admin),
            Some(json!({"value": "v"})),
        )
        .await;
    assert_eq!(server.get("/v1/me", &admin).await.status, 200);
    let p = server
        .call(
            "PATCH",
            &format!("/v1/tenants/{tenant}"),
            Some(OPERATOR_TOKEN),
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(p.body["suspended"], true);
    let r = server.get("/v1/me", &admin).await;
    assert_eq!((r.status, r.code()), (403, "tenant_suspended"));
    server
        .call(
            "PATCH",
            &format!("/v1/tenants/{tenant}"),
            Some(OPERATOR_TOKEN),
            Some(json!({"suspended": false})),
        )
        .await;
    assert_eq!(server.get("/v1/me", &admin).await.status, 200);
    // Re-plan, with an unknown plan refused.
    let r = server
        .call(
            "PATCH",
            &format!("/v1/tenants/{tenant}"),
            Some(OPERATOR_TOKEN),
            Some(json!({"plan": "gold"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "unknown_plan"));
    let r = server
        .call(
            "PATCH",
            &format!("/v1/tenants/{tenant}"),
            Some(OPERATOR_TOKEN),
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(r.body["plan"], "pro");
    assert_eq!(
        server.get("/v1/me", &admin).await.body["tenant"]["plan"],
        "pro"
    );

    let d = server
        .call(
            "DELETE",
            &format!("/v1/tenants/{tenant}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(d.status, 204);
    assert_eq!(server.get("/v1/me", &admin).await.status, 401);
    assert_eq!(
        server
            .call(
                "GET",
                &format!("/v1/tenants/{tenant}"),
                Some(OPERATOR_TOKEN),
                None
            )
            .await
            .status,
        404
    );
    assert_eq!(
        server
            .call(
                "DELETE",
                &format!("/v1/tenants/{tenant}"),
                Some(OPERATOR_TOKEN),
                None
            )
            .await
            .status,
        404
    );
    assert_eq!(server.get("/v1/me", &other_admin).await.status, 200);
    // Its name is free again.
    assert_eq!(
        server
            .call(
                "POST",
                "/v1/tenants",
                Some(OPERATOR_TOKEN),
                Some(json!({"name": "acme"}))
            )
            .await
            .status,
        201
    );
    server.stop().await;
}

#[tokio::test]
async fn tenants_crud_and_pagination() {
    let server = TestServer::start().await;
    for i in 0..5 {
        server.create_tenant(&format!("t{i}")).await;
    }
    let dup = server
        .call(
            "POST",
            "/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "t0"})),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (409, "tenant_exists"));
    let pro = server
        .call(
            "POST",
            "/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "p", "plan": "pro"})),
        )
        .await;
    assert_eq!(pro.body["plan"], "pro");
    let mut names = Vec::new();
    let mut path = "/v1/tenants?limit=2".to_owned();
    loop {
        let page = server.call("GET", &path, Some(OPERATOR_TOKEN), None).await;
        assert!(page.body["data"].as_array().unwrap().len() <= 2);
        names.extend(
            page.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/tenants?limit=2&cursor={c}"),
            None => break,
        }
    }
    names.sort();
    assert_eq!(names, vec!["p", "t0", "t1", "t2", "t3", "t4"]);
    for bad in [
        "/v1/tenants?limit=0",
        "/v1/tenants?limit=501",
        "/v1/tenants?limit=x",
        "/v1/tenants?bogus=1",
    ] {
        let r = server.call("GET", bad, Some(OPERATOR_TOKEN), None).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    for bad in ["ten_nope", "..%2F..", "ten_aaaaaaaaaaaaaaaaaaaa"] {
        let r = server
            .call(
                "GET",
                &format!("/v1/tenants/{bad}"),
                Some(OPERATOR_TOKEN),
                None,
            )
            .await;
        assert_eq!(r.status, 404, "{bad}");
    }
    server.stop().await;
}

/// True if any file under the server's data directory contains `needle`.
fn data_dir_contains(server: &TestServer, needle: &[u8]) -> bool {
    fn walk(dir: &std::path::Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p, needle)
            } else {
                std::fs::read(&p)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
            }
        })
    }
    walk(&server.data_dir, needle)
}

async fn secrets_never_leave(server: &TestServer) {
    let (_, admin) = tenant_with_admin(server, "vault").await;
    let value = "sk-live-PLAINTEXT-MARKER-4242";
    let r = server
        .call(
            "PUT",
            "/v1/secrets/OPENAI_KEY",
            Some(&admin),
            Some(json!({"value": value})),
        )
        .await;
    assert_eq!(r.status, 204);
    server
        .call(
            "PUT",
            "/v1/secrets/OPENAI_KEY",
            Some(&admin),
            Some(json!({"value": value})),
        )
        .await;
    let list = server.get("/v1/secrets", &admin).await;
    assert_eq!(list.body["data"][0]["name"], "OPENAI_KEY");
    let audit = server.get("/v1/audit", &admin).await;
    for answer in [&list.body, &audit.body] {
        assert!(!answer.to_string().contains(value));
    }
    assert!(audit.body.to_string().contains("secret.put"));
    // No GET of a single secret exists: its path answers 405, not the value.
    let r = server.get("/v1/secrets/OPENAI_KEY", &admin).await;
    assert_eq!(r.status, 405);
    // Not on disk in clear: the data directory (SQLite file, WAL, keys) and the database.
    assert!(
        !data_dir_contains(server, value.as_bytes()),
        "secret plaintext found in the data directory"
    );
    if let Some(url) = server.pg_url() {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        sqlx::query("SELECT set_config('berth.operator', 'on', false)")
            .execute(&mut conn)
            .await
            .unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for t in tables {
            // Dump every row of every table as text, once per tenant setting, so that the
            // search covers all rows whether or not this role is subject to row-level security.
            let tenants: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants")
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
            for tenant in tenants.iter().chain(std::iter::once(&String::new())) {
                sqlx::query("SELECT set_config('berth.tenant_id', $1, false)")
                    .bind(tenant)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let dump: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT row_to_json(x)::text FROM {t} x"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                assert!(
                    dump.iter().all(|row| !row.contains(value)),
                    "secret plaintext found in table {t}"
                );
            }
        }
    }
    // Deleting works and is audited; deleting again is a 404.
    assert_eq!(
        server
            .call("DELETE", "/v1/secrets/OPENAI_KEY", Some(&admin), None)
            .await
            .status,
        204
    );
    assert_eq!(
        server
            .call("DELETE", "/v1/secrets/OPENAI_KEY", Some(&admin), None)
            .await
            .code(),
        "secret_not_found"
    );
    // Limits and names.
    let big = "x".repeat(64 * 1024 + 1);
    assert_eq!(
        server
            .call(
                "PUT",
                "/v1/secrets/BIG",
                Some(&admin),
                Some(json!({"value": big}))
            )
            .await
            .status,
        413
    );
    assert_eq!(
        server
            .call(
                "PUT",
                "/v1/secrets/EMPTY",
                Some(&admin),
                Some(json!({"value": ""}))
            )
            .await
            .status,
        422
    );
    let r = server
        .call(
            "PUT",
            "/v1/secrets/bad%20name",
            Some(&admin),
            Some(json!({"value": "v"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["param"].as_str()),
        (422, Some("name"))
    );
}

#[tokio::test]
async fn secret_values_never_leave_the_vault_on_sqlite() {
    let server = TestServer::start().await;
    secrets_never_leave(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn secret_values_never_leave_the_vault_on_postgres() {
    let Some(server) = TestServer::start_postgres().await else {
        return;
    };
    secrets_never_leave(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn audit_chain_records_changes_and_detects_tampering() {
    let server = TestServer::start().await;
    let (tenant, admin) = tenant_with_admin(&server, "acme").await;
    server
        .call(
            "PUT",
            "/v1/secrets/A",
            Some(&admin),
            Some(json!({"value": "1"})),
        )
        .await;
    server
        .call(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    let audit = server.get("/v1/audit", &admin).await;
    let actions: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["tenant.create", "key.create", "secret.put", "key.create"]
    );
    assert_eq!(
        audit.body["data"][2]["actor"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("key")
    );
    let v = server.get("/v1/audit/verify", &admin).await;
    assert_eq!(
        (v.body["ok"].as_bool(), v.body["entries"].as_u64()),
        (Some(true), Some(4))
    );
    // Paging by seq.
    let p = server.get("/v1/audit?limit=3", &admin).await;
    assert_eq!(p.body["next_cursor"], "3");
    let p2 = server.get("/v1/audit?limit=3&cursor=3", &admin).await;
    assert_eq!(p2.body["data"][0]["seq"], 4);

    // Edit one row directly in the database: verify reports the first bad seq.
    let db = format!("sqlite://{}", server.data_dir.join("berth.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("UPDATE audit_log SET target = 'forged' WHERE tenant_id = $1 AND seq = 3")
        .bind(&tenant)
        .execute(&pool)
        .await
        .unwrap();
    let v = server.get("/v1/audit/verify", &admin).await;
    assert_eq!(
        (v.body["ok"].as_bool(), v.body["seq"].as_i64()),
        (Some(false), Some(3)),
        "{:?}",
        v.body
    );
    // Delete a row: the gap is found.
    sqlx::query("DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 2")
        .bind(&tenant)
        .execute(&pool)
        .await
        .unwrap();
    let v = server.get("/v1/audit/verify", &admin).await;
    assert_eq!(
        (v.body["ok"].as_bool(), v.body["seq"].as_i64()),
        (Some(false), Some(2))
    );
    pool.close().await;
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let server = TestServer::start().await;
    let (_, admin) = tenant_with_admin(&server, "acme").await;
    let url = format!("{}/v1/keys", server.url);
    let send = |body: Vec<u8>, ctype: &'static str| {
        let req = server
            .http
            .post(&url)
            .bearer_auth(&admin)
            .header("content-type", ctype)
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let has_id = resp.headers().contains_key("x-request-id");
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(has_id);
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    assert_eq!(
        send(b"{not json".to_vec(), "application/json").await,
        (400, "invalid_json".into())
    );
    assert_eq!(
        send(b"{}".to_vec(), "text/plain").await,
        (415, "unsupported_media_type".into())
    );
    assert_eq!(
        send(
            br#"{"name":"x","role":"viewer","extra":1}"#.to_vec(),
            "application/json"
        )
        .await
        .0,
        422
    );
    assert_eq!(
        send(br#"{"name":5}"#.to_vec(), "application/json").await.0,
        422
    );
    let huge = format!(
        r#"{{"name":"{}","role":"viewer"}}"#,
        "x".repeat(11 * 1024 * 1024)
    );
    assert_eq!(
        send(huge.into_bytes(), "application/json").await,
        (413, "payload_too_large".into())
    );
    assert_eq!(
        send(vec![0xff, 0xfe, 0x00], "application/json").await.0,
        400
    );
    // Unknown routes and methods answer in the error shape.
    let r = server.get("/v1/nothing-here", &admin).await;
    assert_eq!((r.status, r.code()), (404, "route_not_found"));
    let r = server.call("PATCH", "/v1/me", Some(&admin), None).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    // Invalid ids are simply not found.
    for id in [
        "nope",
        "key_",
        "key_!!!!!!!!!!!!!!!!!!!!",
        "key_aaaaaaaaaaaaaaaaaaaa",
    ] {
        let r = server
            .call("DELETE", &format!("/v1/keys/{id}"), Some(&admin), None)
            .await;
        assert_eq!((r.status, r.code()), (404, "key_not_found"), "{id}");
    }
    // Operator endpoints validate too.
    for body in [
        json!({"name": ""}),
        json!({"name": "a b"}),
        json!({"name": "x", "plan": "gold"}),
        json!({"nam": "x"}),
    ] {
        let r = server
            .call(
                "POST",
                "/v1/tenants",
                Some(OPERATOR_TOKEN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 422, "{body}");
    }
    // The server is still fine.
    assert_eq!(server.get("/v1/me", &admin).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn ops_endpoints() {
    let server = TestServer::start().await;
    let (tenant, admin) = tenant_with_admin(&server, "acme").await;
    assert_eq!(
        server.call("GET", "/healthz", None, None).await.body["status"],
        "ok"
    );
    let ready = server.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (ready.status, ready.body["store"].as_str()),
        (200, Some("sqlite"))
    );
    server.get("/v1/me", &admin).await;
    let resp = server
        .http
        .get(format!("{}/metrics", server.url))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("berth_http_requests_total")
                && l.contains("route=\"/v1/me\"")
                && l.contains(&tenant)
        })
        .unwrap_or_else(|| panic!("no /v1/me request metric for the tenant in:\n{text}"));
    assert!(line.contains("status=\"200\""), "{line}");
    assert_eq!(server.get("/metrics", &admin).await.status, 403);
    let doc = server.call("GET", "/openapi.json", None, None).await;
    assert_eq!(doc.body["openapi"], "3.1.0");
    assert!(doc.body["paths"]["/v1/me"]["get"].is_object());
    server.stop().await;
}

// --- JWT -----------------------------------------------------------------------------------

fn jwt_config(hs256: Option<&str>, jwks_url: Option<String>) -> berth::config::JwtConfig {
    berth::config::JwtConfig {
        issuer: Some("https://issuer.test".into()),
        audience: Some("berth".into()),
        jwks_url,
        hs256_secret_env: hs256.map(|_| "JWT_SECRET".into()),
        tenant_claim: "tenant_id".into(),
        role_claim: "role".into(),
        hs256_secret: hs256.map(str::to_owned),
    }
}

fn claims(tenant: &str, role: &str, exp_in: i64) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({"sub": "user-1", "iss": "https://issuer.test", "aud": "berth", "exp": now + exp_in, "tenant_id": tenant, "role": role})
}

#[tokio::test]
async fn jwt_hs256_carries_tenant_and_role() {
    let secret = "a-long-shared-hs256-secret-for-tests";
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.auth.jwt = Some(jwt_config(Some(secret), None))
    })
    .await;
    let tenant = server.create_tenant("acme").await;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let sign = |c: &Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), c, &key).unwrap();

    let me = server
        .get("/v1/me", &sign(&claims(&tenant, "developer", 300)))
        .await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(
        (
            me.body["tenant"]["id"].as_str(),
            me.body["key"]["role"].as_str()
        ),
        (Some(tenant.as_str()), Some("developer"))
    );
    assert_eq!(me.body["key"]["name"], "user-1");
    // Role is enforced: a developer cannot list keys.
    assert_eq!(
        server
            .get("/v1/keys", &sign(&claims(&tenant, "developer", 300)))
            .await
            .status,
        403
    );
    // Expired, wrong issuer, wrong audience, wrong secret, unknown tenant, bad role: 401.
    let mut wrong_iss = claims(&tenant, "admin", 300);
    wrong_iss["iss"] = json!("https://evil.test");
    let mut wrong_aud = claims(&tenant, "admin", 300);
    wrong_aud["aud"] = json!("other");
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims(&tenant, "admin", 300),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    for (what, token) in [
        ("expired", sign(&claims(&tenant, "admin", -120))),
        ("issuer", sign(&wrong_iss)),
        ("audience", sign(&wrong_aud)),
        ("signature", forged),
        (
            "tenant",
            sign(&claims(
                &berth_core::TenantId::new().to_string(),
                "admin",
                300,
            )),
        ),
        ("role", sign(&claims(&tenant, "root", 300))),
    ] {
        let r = server.get("/v1/me", &token).await;
        assert_eq!(r.status, 401, "{what}: {:?}", r.body);
    }
    server.stop().await;
}

#[tokio::test]
async fn jwt_claims_required_when_configured_and_subjects_kept_apart() {
    let secret = "a-long-shared-hs256-secret-for-tests";
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.auth.jwt = Some(jwt_config(Some(secret), None))
    })
    .await;
    let tenant = server.create_tenant("acme").await;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let sign = |c: &Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), c, &key).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // Issuer and audience are configured, so a token without them is refused; so is one
    // without a subject, and one not valid before a time still to come.
    let without = |claim: &str| {
        let mut c = claims(&tenant, "admin", 300);
        c.as_object_mut().unwrap().remove(claim);
        c
    };
    let mut not_yet = claims(&tenant, "admin", 3600);
    not_yet["nbf"] = json!(now + 1800);
    let mut control = claims(&tenant, "admin", 300);
    control["sub"] = json!("user\u{0}1");
    for (what, token) in [
        ("no iss", sign(&without("iss"))),
        ("no aud", sign(&without("aud"))),
        ("no sub", sign(&without("sub"))),
        ("future nbf", sign(&not_yet)),
        ("NUL in sub", sign(&control)),
    ] {
        let r = server.get("/v1/me", &token).await;
        assert_eq!(r.status, 401, "{what}: {:?}", r.body);
    }
    let mut past_nbf = claims(&tenant, "admin", 300);
    past_nbf["nbf"] = json!(now - 10);
    assert_eq!(server.get("/v1/me", &sign(&past_nbf)).await.status, 200);

    // Two JWT invokers (no key id): neither cancels the other's run; each its own.
    let (_, dev) = server.create_key(&tenant, "developer").await;
    let deployed = server
        .call(
            "POST",
            "/v1/agents/support/versions",
            Some(&dev),
            Some(json!({"manifest": {"name": "support", "model": {"name": "mock/echo"}}})),
        )
        .await;
    assert_eq!(deployed.status, 201, "{:?}", deployed.body);
    let invoker = |sub: &str| {
        let mut c = claims(&tenant, "invoker", 300);
        c["sub"] = json!(sub);
        sign(&c)
    };
    let (alice, bob) = (invoker("alice"), invoker("bob"));
    let run = server
        .call(
            "POST",
            "/v1/agents/support/runs",
            Some(&alice),
            Some(json!({"input": "hi", "async": true})),
        )
        .await;
    assert_eq!(run.status, 202, "{:?}", run.body);
    let cancel = format!("/v1/runs/{}/cancel", run.body["id"].as_str().unwrap());
    let by_bob = server.call("POST", &cancel, Some(&bob), None).await;
    assert_eq!(
        (by_bob.status, by_bob.body["error"]["code"].as_str()),
        (403, Some("not_your_run")),
        "{:?}",
        by_bob.body
    );
    let by_alice = server.call("POST", &cancel, Some(&alice), None).await;
    assert_ne!(by_alice.status, 403, "{:?}", by_alice.body);
    server.stop().await;
}

#[tokio::test]
async fn jwt_from_a_jwks_endpoint() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let x =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || async move { axum::Json(jwks) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.auth.jwt = Some(jwt_config(None, Some(jwks_url)))
    })
    .await;
    let tenant = server.create_tenant("acme").await;
    let der = signing.to_pkcs8_der().unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &claims(&tenant, "viewer", 300), &key).unwrap();
    let me = server.get("/v1/me", &token).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["key"]["role"], "viewer");
    // A token signed by another key with the same kid is refused.
    let other = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let forged = jsonwebtoken::encode(
        &header,
        &claims(&tenant, "admin", 300),
        &jsonwebtoken::EncodingKey::from_ed_der(other.to_pkcs8_der().unwrap().as_bytes()),
    )
    .unwrap();
    assert_eq!(server.get("/v1/me", &forged).await.status, 401);
    // An unknown kid is refused.
    header.kid = Some("k2".into());
    let unknown = jsonwebtoken::encode(&header, &claims(&tenant, "admin", 300), &key).unwrap();
    assert_eq!(server.get("/v1/me", &unknown).await.status, 401);
    // HMAC tokens are refused when no HS256 secret is configured (no algorithm confusion).
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims(&tenant, "admin", 300),
        &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
    )
    .unwrap();
    assert_eq!(server.get("/v1/me", &hs).await.status, 401);
    server.stop().await;
}

// --- policy, providers, usage ----------------------------------------------------------------

#[tokio::test]
async fn policy_is_validated_revisioned_and_audited() {
    let server = TestServer::start().await;
    let (_, admin) = tenant_with_admin(&server, "acme").await;
    let empty = server.get("/v1/policy", &admin).await;
    assert_eq!(
        (
            empty.body["revision"].as_i64(),
            empty.body["policy"].clone()
        ),
        (Some(0), json!({}))
    );
    let doc = json!({"models": {"allow": ["mock/*"], "aliases": {"fast": "mock/echo"}}, "limits": {"requests_per_minute": 10}});
    let put = server
        .call("PUT", "/v1/policy", Some(&admin), Some(doc.clone()))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["revision"], 1);
    assert_eq!(put.headers.get("etag").unwrap(), "\"1\"");
    assert_eq!(
        server.get("/v1/policy", &admin).await.body["policy"]["models"]["aliases"]["fast"],
        "mock/echo"
    );
    // Optimistic concurrency with If-Match.
    let put_if = |rev: &'static str| {
        server
            .http
            .put(format!("{}/v1/policy", server.url))
            .bearer_auth(&admin)
            .header("if-match", rev)
            .json(&doc)
            .send()
    };
    assert_eq!(put_if("\"0\"").await.unwrap().status(), 409);
    assert_eq!(put_if("1").await.unwrap().status(), 200);
    assert_eq!(put_if("banana").await.unwrap().status(), 400);
    // Unknown fields and bad values are refused, naming the field.
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&admin),
            Some(json!({"modles": {}})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("modles")
    );
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&admin),
            Some(json!({"budgets": [{"scope": "team", "period": "day", "limit_usd": 1}]})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["param"].as_str()),
        (422, Some("budgets[0].scope"))
    );
    let r = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&admin),
            Some(json!({"dlp": {"custom": [{"name": "x", "regex": "("}]}})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["param"].as_str()),
        (422, Some("dlp.custom[0].regex"))
    );
    let r = server.call("PUT", "/v1/policy", Some(&admin), Some(json!({"webhooks": [{"url": "http://169.254.169.254/x", "events": ["run.failed"]}]}))).await;
    assert_eq!((r.status, r.code()), (422, "egress_refused"));
    let audit = server.get("/v1/audit", &admin).await.body.to_string();
    assert_eq!(audit.matches("policy.update").count(), 2);
    server.stop().await;
}

#[tokio::test]
async fn providers_need_a_secret_and_a_permitted_destination() {
    let server = TestServer::start().await;
    let (_, admin) = tenant_with_admin(&server, "acme").await;
    let put = |name: &str, body: Value| {
        let path = format!("/v1/providers/{name}");
        let (server, admin) = (&server, admin.clone());
        async move { server.call("PUT", &path, Some(&admin), Some(body)).await }
    };
    let r = put(
        "mine",
        json!({"kind": "openai", "api_key_secret": "OPENAI_KEY"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["param"].as_str()),
        (422, Some("api_key_secret"))
    );
    server
        .call(
            "PUT",
            "/v1/secrets/OPENAI_KEY",
            Some(&admin),
            Some(json!({"value": "sk-tenant-own-key-123456"})),
        )
        .await;
    let r = put(
        "mine",
        json!({"kind": "openai", "api_key_secret": "OPENAI_KEY"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["api_key_secret"], "OPENAI_KEY");
    assert!(!r.body.to_string().contains("sk-tenant-own-key"));
    for (body, code) in [
        (
            json!({"kind": "cohere", "api_key_secret": "OPENAI_KEY"}),
            "invalid_kind",
        ),
        (
            json!({"kind": "openai-compatible", "api_key_secret": "OPENAI_KEY"}),
            "base_url_required",
        ),
        (
            json!({"kind": "openai-compatible", "base_url": "http://127.0.0.1:8000/v1", "api_key_secret": "OPENAI_KEY"}),
            "egress_refused",
        ),
        (
            json!({"kind": "openai-compatible", "base_url": "http://localhost:8000/v1", "api_key_secret": "OPENAI_KEY"}),
            "egress_refused",
        ),
        (
            json!({"kind": "openai-compatible", "base_url": "http://169.254.169.254/v1", "api_key_secret": "OPENAI_KEY"}),
            "egress_refused",
        ),
        (
            json!({"kind": "openai-compatible", "base_url": "file:///etc/passwd", "api_key_secret": "OPENAI_KEY"}),
            "egress_refused",
        ),
    ] {
        let r = put("other", body.clone()).await;
        assert_eq!((r.status, r.code()), (422, code), "{body}");
    }
    let r = put(
        "mock",
        json!({"kind": "openai", "api_key_secret": "OPENAI_KEY"}),
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "provider_name_reserved"));
    let list = server.get("/v1/providers", &admin).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        server
            .call("DELETE", "/v1/providers/mine", Some(&admin), None)
            .await
            .status,
        204
    );
    assert_eq!(
        server.get("/v1/providers/mine", &admin).await.code(),
        "provider_not_found"
    );
    server.stop().await;

    // An operator may allow a private range; then such a base URL is accepted.
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.egress.allow_private = vec!["127.0.0.0/8".into()]
    })
    .await;
    let (_, admin) = tenant_with_admin(&server, "acme").await;
    server
        .call(
            "PUT",
            "/v1/secrets/K",
            Some(&admin),
            Some(json!({"value": "sk-x"})),
        )
        .await;
    let r = server
        .call("PUT", "/v1/providers/local", Some(&admin), Some(json!({"kind": "openai-compatible", "base_url": "http://127.0.0.1:8000/v1", "api_key_secret": "K"})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    server.stop().await;
}

#[tokio::test]
async fn usage_query_parameters_are_checked() {
    let server = TestServer::start().await;
    let (_, admin) = tenant_with_admin(&server, "acme").await;
    let ok = server
        .get(
            "/v1/usage?from=2026-01-01&to=2026-12-31T00:00:00Z&group_by=agent,model,day",
            &admin,
        )
        .await;
    assert_eq!(
        (ok.status, ok.body["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    for (q, param) in [
        ("group_by=colour", "group_by"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
    ] {
        let r = server.get(&format!("/v1/usage?{q}"), &admin).await;
        assert_eq!(
            (r.status, r.body["error"]["param"].as_str()),
            (400, Some(param)),
            "{q}"
        );
    }
    assert_eq!(server.get("/v1/usage?bogus=1", &admin).await.status, 400);
    server.stop().await;
}
