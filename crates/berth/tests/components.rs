//! End-to-end tests of component agents: the example Rust component (`examples/rust-agent`,
//! built for wasm32-wasip2) deployed as a bundle and run through the API, its imports served
//! by the platform (model calls through the gateway, tools, key-value data, thread, log,
//! HTTP through the egress guard), metered as compute; and the hostile component's limit
//! breaches failing only their own run with a precise code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_testkit::{Backend, TestServer};
use serde_json::{Value, json};

/// Deploys `wasm` as `agent.wasm` with `manifest` (TOML) from a packed directory, as
/// `berth deploy` does.
async fn deploy(
    server: &TestServer,
    key: &str,
    name: &str,
    manifest: &str,
    wasm: &[u8],
) -> berth_testkit::Answer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.toml"), manifest).unwrap();
    std::fs::write(dir.path().join("agent.wasm"), wasm).unwrap();
    let packed = berth::pack::pack(dir.path()).unwrap();
    let resp = server
        .http
        .post(format!("{}/v1/agents/{name}/versions", server.url))
        .bearer_auth(key)
        .header("content-type", "application/gzip")
        .body(packed.bytes)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    berth_testkit::Answer {
        status,
        body,
        headers,
    }
}

async fn run(server: &TestServer, key: &str, agent: &str, input: &str) -> Value {
    let r = server
        .call(
            "POST",
            &format!("/v1/agents/{agent}/runs"),
            Some(key),
            Some(json!({"input": input, "thread": "new"})),
        )
        .await;
    assert!(r.status == 200, "{:?}", r.body);
    r.body
}

/// A status page on 127.0.0.1 for the component's HTTP import.
async fn status_page() -> String {
    // `/huge` answers 64 MiB, chunked (no length declared up front).
    let huge = || async {
        let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
        let chunks = futures_util::stream::iter(
            (0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        axum::body::Body::from_stream(chunks)
    };
    let app = axum::Router::new()
        .route("/status", axum::routing::get(|| async { "all good" }))
        .route("/huge", axum::routing::get(huge));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn a_rust_component_agent_runs_through_the_platform() {
    let wasm = berth_testkit::wasm::example("rust-agent");
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.egress.allow_private = vec!["127.0.0.0/8".into()]
    })
    .await;
    let t = server.create_tenant("wasm").await;
    let (_, key) = server.create_key(&t, "admin").await;
    let base = status_page().await;
    let manifest = format!(
        "name = \"helper\"\n[model]\nname = \"mock/tools\"\n[prompt]\nsystem = \"You help {{{{tenant.name}}}}.\"\n\
         [tools]\nuse = [\"mock__echo\"]\n[component]\npath = \"agent.wasm\"\nmemory_mb = 64\ncpu_ms = 2000\n\
         allowed_hosts = [\"{base}\"]\n[component.config]\nstatus_url = \"{base}/status\"\n"
    );
    let d = deploy(&server, &key, "helper", &manifest, &wasm).await;
    assert_eq!(d.status, 201, "{:?}", d.body);

    let first = run(&server, &key, "helper", "please call mock__echo").await;
    assert_eq!(first["status"], "succeeded", "{first:?}");
    let out = first["output"].as_str().unwrap();
    assert!(
        out.starts_with("tool results: {\"echo\":{}}"),
        "the model saw the tool's result: {out}"
    );
    assert!(
        out.ends_with("[runs: 1; tools: mock__echo; status: 200 all good]"),
        "{out}"
    );
    assert_eq!(first["usage"]["llm_calls"], 2);
    assert_eq!(first["usage"]["tool_calls"], 1);
    assert!(first["usage"]["compute_ms"].as_u64().unwrap() > 0);
    // Its key-value data outlives the run.
    let second = run(&server, &key, "helper", "just talk").await;
    assert!(
        second["output"].as_str().unwrap().contains("[runs: 2;"),
        "{second:?}"
    );

    // Every import is a trace step: log, model calls (with the system prompt from the
    // manifest), the tool call, the HTTP request.
    let id = first["id"].as_str().unwrap();
    let trace = server.get(&format!("/v1/runs/{id}/trace"), &key).await;
    let steps = trace.body["data"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["log", "llm_call", "tool_call", "llm_call", "http"],
        "{steps:?}"
    );
    assert_eq!(steps[0]["message"], "run number 1");
    assert_eq!(steps[1]["request"]["system"], "You help wasm.");
    assert_eq!(steps[4]["status"], 200);
    // Model calls were metered like any gateway call, attributed to the agent, and the
    // component's CPU time as compute.
    let usage = server.get("/v1/usage?group_by=agent", &key).await;
    let row = usage.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent"] == "helper")
        .unwrap()
        .clone();
    assert_eq!(row["llm_calls"], 3);
    assert_eq!(row["runs"], 2);
    assert!(row["compute_ms"].as_i64().unwrap() > 0, "{row}");

    // The egress guard stands behind `allowed_hosts`: allowed by the manifest, refused by
    // the platform (a private address this server may not reach).
    let server2 = TestServer::start().await;
    let t2 = server2.create_tenant("guarded").await;
    let (_, key2) = server2.create_key(&t2, "admin").await;
    let d = deploy(&server2, &key2, "helper", &manifest, &wasm).await;
    assert_eq!(d.status, 201);
    let guarded = run(&server2, &key2, "helper", "hello").await;
    assert!(
        guarded["output"]
            .as_str()
            .unwrap()
            .contains("status: unavailable (denied)"),
        "{guarded:?}"
    );
}

#[tokio::test]
async fn hostile_components_fail_alone_with_a_precise_code() {
    let wasm = berth_testkit::wasm::example("hostile-agent");
    let server = TestServer::start().await;
    let t = server.create_tenant("hostile").await;
    let (_, key) = server.create_key(&t, "admin").await;
    let manifest = "name = \"hostile\"\n[model]\nname = \"mock/echo\"\n[limits]\ntimeout = \"10s\"\n\
                    [component]\npath = \"agent.wasm\"\nmemory_mb = 16\ncpu_ms = 100\nallowed_hosts = [\"https://api.example.com\"]\n";
    let d = deploy(&server, &key, "hostile", manifest, &wasm).await;
    assert_eq!(d.status, 201, "{:?}", d.body);
    for (input, code) in [
        ("loop", "cpu_limit"),
        ("bomb", "memory_limit"),
        ("recurse", "trap"),
        ("panic", "trap"),
    ] {
        let r = run(&server, &key, "hostile", input).await;
        assert_eq!(
            (r["status"].as_str(), r["error"]["code"].as_str()),
            (Some("failed"), Some(code)),
            "{input}: {r:?}"
        );
        // The neighbour run right after is unaffected.
        let ok = run(&server, &key, "hostile", "echo:still here").await;
        assert_eq!(ok["output"], "still here");
    }
    let denied = run(&server, &key, "hostile", "http:http://10.0.0.1/").await;
    assert!(
        denied["output"].as_str().unwrap().starts_with("denied"),
        "{denied:?}"
    );
    let r = run(&server, &key, "hostile", "loop").await;
    let trace = server
        .get(
            &format!("/v1/runs/{}/trace", r["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(
        trace.body["data"].as_array().unwrap().last().unwrap()["code"],
        "cpu_limit"
    );

    // A bundle whose component does not compile is refused at deploy, naming the field.
    let bad = deploy(
        &server,
        &key,
        "broken",
        &manifest.replace("hostile", "broken"),
        b"not wasm",
    )
    .await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert_eq!(bad.body["error"]["param"], "component.path");
}

/// Issue 14, item 14: a component agent is held to its manifest's `max_steps` and
/// `max_cost_usd` and to the tenant's data-loss rules, as a built-in agent is; the run
/// fails with the limit's code even though the component may handle the refusal.
#[tokio::test]
async fn component_agents_get_the_limits_and_rules_of_built_in_ones() {
    let wasm = berth_testkit::wasm::example("rust-agent");
    let server = TestServer::start().await;
    let t = server.create_tenant("wasm-limits").await;
    let (_, key) = server.create_key(&t, "admin").await;
    let component = "[component]\npath = \"agent.wasm\"\nmemory_mb = 64\ncpu_ms = 2000\n";

    // One model call allowed: the tool call's follow-up call is refused.
    let manifest = format!(
        "name = \"stepper\"\n[model]\nname = \"mock/tools\"\n[tools]\nuse = [\"mock__echo\"]\n\
         [limits]\nmax_steps = 1\n{component}"
    );
    let d = deploy(&server, &key, "stepper", &manifest, &wasm).await;
    assert_eq!(d.status, 201, "{:?}", d.body);
    let r = run(&server, &key, "stepper", "please call mock__echo").await;
    assert_eq!(
        (r["status"].as_str(), r["error"]["code"].as_str()),
        (Some("failed"), Some("max_steps")),
        "{r:?}"
    );
    assert_eq!(r["usage"]["llm_calls"], 1, "{r:?}");

    // A max_cost_usd that cannot pay for one call: nothing is spent.
    let manifest = format!(
        "name = \"frugal\"\n[model]\nname = \"mock/echo\"\n[limits]\nmax_cost_usd = 0.000000001\n{component}"
    );
    let d = deploy(&server, &key, "frugal", &manifest, &wasm).await;
    assert_eq!(d.status, 201, "{:?}", d.body);
    let r = run(&server, &key, "frugal", "hello").await;
    assert_eq!(
        (r["status"].as_str(), r["error"]["code"].as_str()),
        (Some("failed"), Some("max_cost_exceeded")),
        "{r:?}"
    );
    assert_eq!(r["usage"]["llm_calls"], 0, "{r:?}");
    assert_eq!(r["usage"]["cost_usd"], 0.0, "{r:?}");

    // The tenant's data-loss rules apply to what the model answers a component.
    let p = server
        .call(
            "PUT",
            "/v1/policy",
            Some(&key),
            Some(
                json!({"dlp": {"detect": ["email"], "on_llm_output": "redact",
                                "on_tool_args": "redact", "on_tool_results": "redact"}}),
            ),
        )
        .await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    let manifest = format!("name = \"talker\"\n[model]\nname = \"mock/echo\"\n{component}");
    let d = deploy(&server, &key, "talker", &manifest, &wasm).await;
    assert_eq!(d.status, 201, "{:?}", d.body);
    let r = run(&server, &key, "talker", "write to jane.doe@example.com").await;
    assert_eq!(r["status"], "succeeded", "{r:?}");
    let out = r["output"].as_str().unwrap();
    assert!(
        out.contains("[REDACTED:email]") && !out.contains("jane.doe@example.com"),
        "{out}"
    );
    let id = r["id"].as_str().unwrap();
    let trace = server.get(&format!("/v1/runs/{id}/trace"), &key).await;
    let steps = trace.body["data"].as_array().unwrap();
    let call = steps.iter().find(|s| s["type"] == "llm_call").unwrap();
    assert!(
        call["response"].is_array() && !call["response"].to_string().contains("jane.doe"),
        "{call:?}"
    );
    assert!(steps.iter().any(|s| s["type"] == "dlp"), "{steps:?}");
    let audit = server.get("/v1/audit", &key).await;
    assert!(
        audit.body.to_string().contains("dlp.hit"),
        "{:?}",
        audit.body
    );
    server.stop().await;
}

/// Issue 14, item 22: a component's HTTP answer is read up to a limit (16 MiB): a huge one
/// fails that call, cleanly, and the run goes on.
#[tokio::test]
async fn a_huge_http_answer_to_a_component_is_cut_off() {
    let wasm = berth_testkit::wasm::example("rust-agent");
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.egress.allow_private = vec!["127.0.0.0/8".into()]
    })
    .await;
    let t = server.create_tenant("wasm-huge").await;
    let (_, key) = server.create_key(&t, "admin").await;
    let base = status_page().await;
    let manifest = format!(
        "name = \"fetcher\"\n[model]\nname = \"mock/echo\"\n[component]\npath = \"agent.wasm\"\nmemory_mb = 64\ncpu_ms = 2000\n\
         allowed_hosts = [\"{base}\"]\n[component.config]\nstatus_url = \"{base}/huge\"\n"
    );
    let d = deploy(&server, &key, "fetcher", &manifest, &wasm).await;
    assert_eq!(d.status, 201, "{:?}", d.body);
    let r = run(&server, &key, "fetcher", "fetch").await;
    assert_eq!(r["status"], "succeeded", "{r:?}");
    let out = r["output"].as_str().unwrap();
    assert!(out.contains("status: unavailable ("), "{out}");
    server.stop().await;
}

/// The example directories as the README uses them, copied so that the test writes nothing
/// into the source tree: everything but build output and a component built earlier.
fn copy_example(name: &str, to: &std::path::Path) {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let file = entry.file_name();
            if ["target", "agent.wasm", ".venv"].contains(&file.to_str().unwrap()) {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir(to.join(&file)).unwrap();
                copy(&entry.path(), &to.join(&file));
            } else {
                std::fs::copy(entry.path(), to.join(&file)).unwrap();
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    copy(&root.join(name), to);
}

/// `berth` itself, as the README's reader runs it, with no saved login.
async fn berth_cli(
    home: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("BERTH_URL")
        .env_remove("BERTH_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "berth {args:?}: {stderr}");
    (stdout, stderr)
}

/// The README's steps for the examples: build the Rust one, put `agent.wasm` next to its
/// `agent.toml`, then `berth validate`, `berth deploy` and `berth run` the directory. The
/// Python one (a debug build takes minutes to compile its interpreter) is validated and
/// packed with a stand-in component.
#[tokio::test]
async fn the_examples_deploy_as_the_readme_says() {
    let home = tempfile::tempdir().unwrap();
    let rust = tempfile::tempdir().unwrap();
    copy_example("rust-agent", rust.path());
    std::fs::write(
        rust.path().join("agent.wasm"),
        berth_testkit::wasm::example("rust-agent"),
    )
    .unwrap();
    let dir = rust.path().to_str().unwrap();
    let (ok, _) = berth_cli(home.path(), &["validate", dir], &[]).await;
    assert_eq!(
        ok.trim(),
        "ok: agent rust-agent (model mock/tools, 1 tool pattern(s), component)"
    );

    let server = TestServer::start().await;
    let t = server.create_tenant("examples").await;
    let (_, key) = server.create_key(&t, "admin").await;
    let env = [
        ("BERTH_URL", server.url.as_str()),
        ("BERTH_TOKEN", key.as_str()),
    ];
    let (deployed, progress) = berth_cli(home.path(), &["deploy", dir], &env).await;
    // The sources stay out of the bundle (`.berthignore`): the manifest and the component.
    assert!(progress.contains("packed 2 file(s)"), "{progress}");
    assert!(
        deployed.starts_with("Deployed rust-agent v1 ("),
        "{deployed}"
    );
    let (answer, trailer) = berth_cli(
        home.path(),
        &["run", "rust-agent", "please call mock__echo"],
        &env,
    )
    .await;
    assert!(
        answer
            .trim_end()
            .ends_with("[runs: 1; tools: mock__echo; status: none]"),
        "{answer}"
    );
    assert!(trailer.contains("rust-agent v1 · succeeded"), "{trailer}");

    let python = tempfile::tempdir().unwrap();
    copy_example("python-agent", python.path());
    std::fs::create_dir(python.path().join(".venv")).unwrap();
    std::fs::write(python.path().join(".venv/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    std::fs::write(python.path().join("agent.wasm"), b"\0asm").unwrap();
    let dir = python.path().to_str().unwrap();
    let (ok, _) = berth_cli(home.path(), &["validate", dir], &[]).await;
    assert_eq!(
        ok.trim(),
        "ok: agent python-agent (model mock/tools, 1 tool pattern(s), component)"
    );
    let packed = berth::pack::pack(python.path()).unwrap();
    assert_eq!(packed.files, 2, "only agent.toml and agent.wasm are packed");
}
