//! End-to-end tests of the real `berth` binary: `berth serve` as a child process (operator
//! token, `--demo`, config errors, graceful shutdown on SIGTERM) and the client commands
//! (login, me, tenants, keys, secrets, audit, deploy, run, runs, logs, policy, providers,
//! mcp, tools, usage) with human and `--json` output, and failures that exit non-zero with the
//! server's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_berth");

/// A port nothing listens on right now (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `BERTH_*` variables of the test's own environment, which no child may inherit.
fn inherited_berth_vars() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_string_lossy().starts_with("BERTH_"))
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A `berth serve` child process; killed when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
    url: String,
    stderr_path: PathBuf,
    _logs: tempfile::TempDir,
}

impl Server {
    /// Starts `berth serve --listen 127.0.0.1:<free port> --data-dir <data_dir> <extra>` and
    /// waits until `/healthz` answers. Retries on another port if the chosen one was taken
    /// between picking and binding.
    async fn start(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        for _attempt in 0..5 {
            let logs = tempfile::tempdir().unwrap();
            let stderr_path = logs.path().join("stderr");
            let port = free_port();
            let mut cmd = std::process::Command::new(BIN);
            cmd.arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(data_dir)
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(logs.path().join("stdout")).unwrap())
                .stderr(std::fs::File::create(&stderr_path).unwrap());
            for k in inherited_berth_vars() {
                cmd.env_remove(k);
            }
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut server = Server {
                child: Some(cmd.spawn().unwrap()),
                port,
                url: format!("http://127.0.0.1:{port}"),
                stderr_path,
                _logs: logs,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                    server.child = None;
                    let err = server.stderr();
                    if err.contains("cannot listen") {
                        break; // the port was taken meanwhile: try another
                    }
                    panic!("berth serve exited with {status} before it was ready:\n{err}");
                }
                let healthy = match http.get(format!("{}/healthz", server.url)).send().await {
                    Ok(r) => r.status() == 200,
                    Err(_) => false,
                };
                // The banner is printed before the server accepts, so a healthy answer with
                // our banner means it is our process answering on this port.
                if healthy
                    && server
                        .stderr()
                        .contains(&format!("listening on {}", server.url))
                {
                    return server;
                }
                assert!(
                    Instant::now() < deadline,
                    "berth serve did not become ready:\n{}",
                    server.stderr()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("could not find a free port for berth serve");
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the process to exit on its own.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "berth serve did not exit within {within:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a finished CLI command left behind.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success; returns standard output.
    fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts a failure exit (1, as main.rs returns for client errors) with an
    /// `error: ` line; returns standard error.
    fn fails(&self) -> &str {
        assert_eq!(
            self.status.code(),
            Some(1),
            "command should have failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        &self.stderr
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `berth <args>` as a client with its saved login under `home` (XDG_CONFIG_HOME),
/// no inherited `BERTH_*` variables, the variables of `env`, and `stdin` on standard input.
async fn berth_with(home: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("BERTH_URL")
        .env_remove("BERTH_TOKEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for k in inherited_berth_vars() {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe); // end of input
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("berth {args:?} did not finish"))
        .unwrap();
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn berth(home: &Path, args: &[&str]) -> Run {
    berth_with(home, args, &[], None).await
}

/// `GET <url><path>` with a bearer token: (status, JSON body or Null).
async fn get(url: &str, path: &str, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `POST <url><path>` with a bearer token and a JSON body; asserts 201, returns the body.
async fn post_created(url: &str, path: &str, token: &str, body: Value) -> Value {
    let (status, body) = post(url, path, token, body).await;
    assert_eq!(status, 201, "POST {path}: {body}");
    body
}

/// The operator token a server generated in its data directory.
fn operator_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("operator-token")).unwrap()
}

/// A tenant named `name` with a key of `role`, made over HTTP as the operator: (tenant id, key).
async fn tenant_with_key(server: &Server, op: &str, name: &str, role: &str) -> (String, String) {
    let t = post_created(
        &server.url,
        "/v1/tenants",
        op,
        serde_json::json!({"name": name}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let k = post_created(
        &server.url,
        &format!("/v1/tenants/{id}/keys"),
        op,
        serde_json::json!({"name": format!("{role}-key"), "role": role}),
    )
    .await;
    (id, k["key"].as_str().unwrap().to_owned())
}

/// The single line of `text` that is a `bk_` key.
fn key_line(text: &str) -> String {
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("bk_"))
        .collect();
    assert_eq!(keys.len(), 1, "expected one bk_ key line in:\n{text}");
    keys[0].to_owned()
}

#[tokio::test]
async fn operator_token_is_generated_once_printed_once_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_path = data.join("operator-token");
    let master_path = data.join("master.key");

    let server = Server::start(&data, &[], &[]).await;
    let err = server.stderr();
    let printed = err
        .lines()
        .skip_while(|l| !l.starts_with("Operator token"))
        .nth(1)
        .unwrap_or_else(|| panic!("no operator token printed:\n{err}"))
        .trim()
        .to_owned();
    assert!(
        printed.starts_with("bop_") && printed.len() > 20,
        "{printed}"
    );
    assert_eq!(std::fs::read_to_string(&token_path).unwrap(), printed);
    assert_eq!(mode(&token_path), 0o600);
    assert_eq!(mode(&master_path), 0o600);
    let (status, _) = get(&server.url, "/v1/tenants", &printed).await;
    assert_eq!(status, 200, "the printed token is the operator token");
    let token_bytes = std::fs::read(&token_path).unwrap();
    let master_bytes = std::fs::read(&master_path).unwrap();
    drop(server);

    // Second start, same data directory: nothing new is generated or printed.
    let server = Server::start(&data, &[], &[]).await;
    let err = server.stderr();
    assert!(
        !err.contains("Operator token") && !err.contains("bop_"),
        "a token was printed again:\n{err}"
    );
    assert_eq!(std::fs::read(&token_path).unwrap(), token_bytes);
    assert_eq!(mode(&token_path), 0o600);
    assert_eq!(std::fs::read(&master_path).unwrap(), master_bytes);
    assert_eq!(mode(&master_path), 0o600);
    let (status, _) = get(&server.url, "/v1/tenants", &printed).await;
    assert_eq!(status, 200, "the kept token still works");
}

#[tokio::test]
async fn client_commands_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let home = dir.path().join("home");
    let server = Server::start(&data, &[], &[]).await;
    let url = server.url.as_str();
    let op = operator_token(&data);
    let op_env = [("BERTH_URL", url), ("BERTH_TOKEN", op.as_str())];

    // Tenants, as the operator: flags and human text...
    let run = berth(
        &home,
        &[
            "tenants", "create", "acme", "--plan", "pro", "--url", url, "--token", &op,
        ],
    )
    .await;
    let text = run.ok();
    let (_, all) = get(url, "/v1/tenants", &op).await;
    let acme = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap_or_else(|| panic!("acme not created: {all}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("Created tenant acme") && text.contains(&acme) && text.contains("plan pro"),
        "{text}"
    );

    // ...and environment variables and JSON.
    let t = berth_with(
        &home,
        &["tenants", "create", "globex", "--plan", "free", "--json"],
        &op_env,
        None,
    )
    .await
    .json();
    assert_eq!(t["name"], "globex");
    assert_eq!(t["plan"], "free");
    let globex = t["id"].as_str().unwrap().to_owned();
    assert!(!globex.is_empty() && globex != acme, "{t}");

    let list = berth_with(&home, &["tenants", "list"], &op_env, None).await;
    let list = list.ok();
    assert!(list.starts_with("ID"), "{list}");
    for needle in ["acme", "globex", acme.as_str(), globex.as_str()] {
        assert!(list.contains(needle), "{needle} missing from:\n{list}");
    }

    // The operator can log in too (its token has no tenant, so login checks it another way).
    let op_home = dir.path().join("operator-home");
    let run = berth(&op_home, &["login", "--url", url, "--token", &op]).await;
    assert!(
        run.ok().contains("Logged in as the operator"),
        "{}",
        run.stdout
    );
    let list = berth(&op_home, &["tenants", "list", "--json"]).await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    // A wrong token is refused and not saved.
    let bad_home = dir.path().join("bad-home");
    let run = berth(&bad_home, &["login", "--url", url, "--token", "bop_wrong"]).await;
    assert!(run.fails().contains("HTTP 401"), "{}", run.stderr);
    assert!(!bad_home.join("berth").join("login.toml").exists());

    // The operator mints acme's first admin key; its secret is on stdout once.
    let run = berth(
        &home,
        &[
            "keys", "create", "--name", "ci", "--role", "admin", "--tenant", &acme, "--url", url,
            "--token", &op,
        ],
    )
    .await;
    assert!(
        run.ok().contains("Created key ci") && run.ok().contains("role admin"),
        "{}",
        run.stdout
    );
    let ci_key = key_line(&run.stdout);
    assert!(run.stderr.contains("only time"), "{}", run.stderr);

    // Login checks and saves URL and key privately; later commands need no flags.
    let text = berth(&home, &["login", "--url", url, "--token", &ci_key]).await;
    assert!(
        text.ok().contains("Logged in as tenant acme as admin"),
        "{}",
        text.stdout
    );
    let saved = home.join("berth").join("login.toml");
    assert_eq!(mode(&saved), 0o600);
    let saved_text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        saved_text.contains(url) && saved_text.contains(&ci_key),
        "{saved_text}"
    );
    let me = berth(&home, &["me"]).await;
    let me = me.ok();
    for needle in ["acme", acme.as_str(), "plan pro", "ci", "role admin"] {
        assert!(me.contains(needle), "{needle} missing from:\n{me}");
    }

    // Keys: the secret is shown at creation only, never listed.
    let run = berth(
        &home,
        &["keys", "create", "--name", "dev", "--role", "developer"],
    )
    .await;
    run.ok();
    let dev_key = key_line(&run.stdout);
    assert_ne!(dev_key, ci_key);
    // BERTH_TOKEN wins over the saved login.
    let me = berth_with(&home, &["me", "--json"], &[("BERTH_TOKEN", &dev_key)], None)
        .await
        .json();
    assert_eq!(me["key"]["name"], "dev");
    assert_eq!(me["key"]["role"], "developer");
    assert_eq!(me["tenant"]["name"], "acme");

    let run = berth(&home, &["keys", "list", "--json"]).await;
    let keys = run.json();
    let keys = keys["data"].as_array().unwrap();
    let mut names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ci", "dev"]);
    for k in keys {
        assert!(k.get("key").is_none(), "a key's secret is listed: {k}");
    }
    assert!(
        !run.stdout.contains(&ci_key) && !run.stdout.contains(&dev_key),
        "a key leaked in the list:\n{}",
        run.stdout
    );
    let human = berth(&home, &["keys", "list"]).await;
    let human = human.ok();
    assert!(
        human.contains("developer") && !human.contains(&ci_key) && !human.contains(&dev_key),
        "{human}"
    );
    let dev_id = keys.iter().find(|k| k["name"] == "dev").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Secrets: the value goes in on stdin and never comes back out.
    let value = "s3cr3t-value-xyz";
    let run = berth_with(&home, &["secrets", "set", "API_TOKEN"], &[], Some(value)).await;
    assert!(run.ok().contains("API_TOKEN"), "{}", run.stdout);
    let list = berth(&home, &["secrets", "list"]).await;
    assert!(
        list.ok().contains("API_TOKEN") && !list.stdout.contains(value),
        "{}",
        list.stdout
    );
    let list = berth(&home, &["secrets", "list", "--json"]).await;
    let secrets = list.json();
    assert_eq!(secrets["data"].as_array().unwrap().len(), 1, "{secrets}");
    assert_eq!(secrets["data"][0]["name"], "API_TOKEN");
    assert!(!list.stdout.contains(value), "{}", list.stdout);
    berth(&home, &["secrets", "delete", "API_TOKEN"]).await.ok();
    let list = berth(&home, &["secrets", "list"]).await;
    assert!(!list.ok().contains("API_TOKEN"), "{}", list.stdout);

    // Audit: the actions are listed and the chain verifies.
    let audit = berth(&home, &["audit", "list"]).await;
    let audit = audit.ok();
    for action in ["key.create", "secret.put", "secret.delete"] {
        assert!(audit.contains(action), "{action} missing from:\n{audit}");
    }
    assert!(
        !audit.contains(value) && !audit.contains(&ci_key),
        "{audit}"
    );
    let verify = berth(&home, &["audit", "verify"]).await;
    assert!(verify.ok().starts_with("ok:"), "{}", verify.stdout);

    // Revocation: the key stops working at once, with the server's reason.
    let run = berth(&home, &["keys", "revoke", &dev_id]).await;
    assert!(
        run.ok().contains("Revoked key dev") && run.stdout.contains(&dev_id),
        "{}",
        run.stdout
    );
    let run = berth(&home, &["me", "--token", &dev_key]).await;
    let err = run.fails();
    assert!(
        err.contains("the API key is not valid") && err.contains("HTTP 401"),
        "{err}"
    );
    // The saved login itself is untouched.
    berth(&home, &["me"]).await.ok();
}

#[tokio::test]
async fn failures_exit_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let home = dir.path().join("home");
    let server = Server::start(&data, &[], &[]).await;
    let url = server.url.as_str();
    let op = operator_token(&data);
    let (_, viewer) = tenant_with_key(&server, &op, "acme", "viewer").await;

    // A viewer cannot mint keys: the server's message names the roles.
    let run = berth(
        &home,
        &[
            "keys", "create", "--name", "x", "--role", "viewer", "--url", url, "--token", &viewer,
        ],
    )
    .await;
    let err = run.fails();
    assert!(
        err.contains("role 'admin'") && err.contains("'viewer'") && err.contains("HTTP 403"),
        "{err}"
    );
    assert!(!run.stdout.contains("bk_"), "{}", run.stdout);

    // Nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let run = berth(&home, &["me", "--url", &dead, "--token", &viewer]).await;
    let err = run.fails();
    assert!(err.contains(&format!("cannot reach {dead}")), "{err}");

    // A name the server refuses.
    let run = berth(
        &home,
        &[
            "tenants",
            "create",
            "bad name!",
            "--url",
            url,
            "--token",
            &op,
        ],
    )
    .await;
    let err = run.fails();
    assert!(err.contains("tenant name"), "{err}");
    let (_, all) = get(url, "/v1/tenants", &op).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1, "{all}");

    // No token anywhere: a usage error that says what to do.
    let run = berth(&home, &["me", "--url", url]).await;
    let err = run.fails();
    assert!(
        err.contains("no token") && err.contains("berth login"),
        "{err}"
    );
}

#[tokio::test]
async fn config_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (file, env, name) in [
        (Some("lisen = \"x\"\n"), None, "lisen"),
        (Some("listen = \"nowhere\"\n"), None, "listen"),
        (None, Some(("BERTH_NOPE", "1")), "nope"),
    ] {
        let case = dir.path().join(name);
        std::fs::create_dir(&case).unwrap();
        let data = case.join("data");
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if name != "listen" {
            // Should loading succeed by mistake, do not take the default port.
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if let Some(text) = file {
            let path = case.join("berth.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        for k in inherited_berth_vars() {
            cmd.env_remove(k);
        }
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{name}: berth serve started despite the bad config"))
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(&format!("'{name}'")),
            "{name}: {err}"
        );
        assert!(!data.exists(), "{name}: the data directory was created");
    }
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[], &[]).await;
    let op = operator_token(&data);
    let (_, key) = tenant_with_key(&server, &op, "acme", "admin").await;

    // A request whose headers are in but whose body is not.
    let addr = format!("127.0.0.1:{}", server.port);
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = br#"{"value":"abc"}"#;
    let head = format!(
        "PUT /v1/secrets/SLOW HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..4]).await.unwrap();
    conn.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The listener closes while the request is still open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(extra) = tokio::net::TcpStream::connect(&addr).await {
        drop(extra);
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The request in flight is still served, then the connection closes.
    conn.write_all(&body[4..]).await.unwrap();
    conn.flush().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("the server neither answered nor closed the connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");

    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        server.stderr().contains("stopped cleanly"),
        "{}",
        server.stderr()
    );

    // And what it answered 204 to was stored.
    let server = Server::start(&data, &[], &[]).await;
    let (status, secrets) = get(&server.url, "/v1/secrets", &key).await;
    assert_eq!(status, 200, "{secrets}");
    assert_eq!(secrets["data"][0]["name"], "SLOW", "{secrets}");
}

#[tokio::test]
async fn demo_creates_a_tenant_and_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let first = Server::start(&data, &["--demo"], &[]).await;
    let err = first.stderr();
    let key = key_line(&err);
    assert!(
        err.contains(&format!(
            "curl -s {}/v1/agents/assistant/runs -H 'Authorization: Bearer {key}'",
            first.url
        )),
        "{err}"
    );
    // The curl line works: the example agent answers on mock/echo.
    let run: Value = reqwest::Client::new()
        .post(format!("{}/v1/agents/assistant/runs", first.url))
        .bearer_auth(&key)
        .json(&serde_json::json!({"input": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (run["status"].as_str(), run["output"].as_str()),
        (Some("succeeded"), Some("hello")),
        "{run}"
    );
    assert_eq!(std::fs::read_to_string(data.join("demo-key")).unwrap(), key);
    assert_eq!(mode(&data.join("demo-key")), 0o600);
    let (status, me) = get(&first.url, "/v1/me", &key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["tenant"]["name"], "demo");
    assert_eq!(me["key"]["role"], "admin");
    let tenant = me["tenant"]["id"].as_str().unwrap().to_owned();
    assert!(err.contains(&format!("Demo tenant {tenant}")), "{err}");
    drop(first);

    let second = Server::start(&data, &["--demo"], &[]).await;
    let err = second.stderr();
    assert_eq!(key_line(&err), key, "the same key is shown again");
    assert!(err.contains(&format!("Demo tenant {tenant}")), "{err}");
    assert_eq!(std::fs::read_to_string(data.join("demo-key")).unwrap(), key);
    let (status, me) = get(&second.url, "/v1/me", &key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["tenant"]["id"], tenant.as_str());
    // Starting again did not make a second version of the example agent.
    let (_, agent) = get(&second.url, "/v1/agents/assistant", &key).await;
    assert_eq!(agent["latest_version"], 1, "{agent}");
}

#[tokio::test]
async fn validate_checks_a_manifest_offline() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let agent = dir.path().join("support");
    std::fs::create_dir(&agent).unwrap();
    let agent_dir = agent.to_str().unwrap();
    std::fs::write(
        agent.join("agent.toml"),
        "name = \"support\"\n[model]\nname = \"mock/echo\"\n[tools]\nuse = [\"crm__*\"]\n",
    )
    .unwrap();
    let run = berth(&home, &["validate", agent_dir]).await;
    assert!(run.ok().starts_with("ok: agent support"), "{}", run.stdout);
    let json = berth(&home, &["validate", agent_dir, "--json"])
        .await
        .json();
    assert_eq!(json["model"]["name"], "mock/echo");
    std::fs::write(
        agent.join("agent.toml"),
        "name = \"support\"\n[model]\nname = \"mock/echo\"\n[limits]\nmax_steps = 0\n",
    )
    .unwrap();
    let run = berth(&home, &["validate", agent_dir]).await;
    let err = run.fails();
    assert!(err.contains("agent.toml:5: limits.max_steps"), "{err}");
    // A type error names the line and the field path, not only the line.
    std::fs::write(
        agent.join("agent.toml"),
        "name = \"support\"\n[model]\nname = 42\n",
    )
    .unwrap();
    let run = berth(&home, &["validate", agent_dir]).await;
    let err = run.fails();
    assert!(
        err.contains("agent.toml:3: model.name: invalid type"),
        "{err}"
    );
    // A model that is neither provider/model nor alias-shaped is refused offline.
    for bad in ["mock/", "fast!", "mock/echo\\u0000"] {
        std::fs::write(
            agent.join("agent.toml"),
            format!("name = \"support\"\n[model]\nname = \"{bad}\"\n"),
        )
        .unwrap();
        let run = berth(&home, &["validate", agent_dir]).await;
        let err = run.fails();
        assert!(err.contains("agent.toml:3: model.name"), "{bad}: {err}");
    }
}

#[test]
fn a_saved_token_is_never_sent_to_another_server() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("berth")).unwrap();
    std::fs::write(
        home.join("berth/login.toml"),
        "url = \"http://127.0.0.1:9\"\ntoken = \"bk_saved_secret_token\"\n",
    )
    .unwrap();
    // A listener that records what it receives, standing in for "another server".
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = format!("http://{}", listener.local_addr().unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["me", "--url", &other])
        .env("XDG_CONFIG_HOME", &home)
        .env_remove("BERTH_URL")
        .env_remove("BERTH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token for this server"));
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "nothing may be sent to the other server"
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn deploy_traffic_and_rollback_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let op = "bop_cli_deploy_test_token_123456";
    let server = Server::start(
        &dir.path().join("data"),
        &[],
        &[("BERTH_OPERATOR_TOKEN", op)],
    )
    .await;
    let (_, key) = tenant_with_key(&server, op, "acme", "developer").await;
    let user: Vec<String> = ["--url", server.url.as_str(), "--token", key.as_str()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|s| s.to_string())
            .chain(user.iter().cloned())
            .collect()
    };
    let agent = dir.path().join("support");
    let agent_dir = agent.to_str().unwrap().to_owned();
    std::fs::create_dir_all(agent.join("docs")).unwrap();
    std::fs::write(agent.join("docs/guide.md"), "be kind").unwrap();
    std::fs::write(agent.join(".berthignore"), "*.log\n").unwrap();
    std::fs::write(agent.join("debug.log"), "noise").unwrap();
    for prompt in ["one", "two"] {
        std::fs::write(agent.join("agent.toml"), format!("name = \"support\"\n[model]\nname = \"mock/echo\"\n[prompt]\nsystem = \"{prompt}\"\n")).unwrap();
        let run = berth(&home, &strs(&with(&["deploy", &agent_dir]))).await;
        let text = run.ok().to_owned();
        assert!(
            text.contains("Deployed support v") && text.contains("sha256:"),
            "{text}"
        );
        assert!(
            run.stderr.contains("packed 2 file(s)"),
            "the .log file is left out: {}",
            run.stderr
        );
    }
    // The same directory again is the same version.
    assert_eq!(
        berth(&home, &strs(&with(&["deploy", &agent_dir, "--json"])))
            .await
            .json()["version"],
        2
    );
    let list = berth(&home, &strs(&with(&["agents", "list"]))).await;
    assert!(
        list.ok().contains("support") && list.ok().contains("v2 100%"),
        "{}",
        list.stdout
    );
    let split = berth(&home, &strs(&with(&["traffic", "support", "1=90", "2=10"]))).await;
    assert!(split.ok().contains("v1 90%, v2 10%"), "{}", split.stdout);
    let bad = berth(&home, &strs(&with(&["traffic", "support", "1=50"]))).await;
    assert!(bad.fails().contains("sum to 100"), "{}", bad.stderr);
    let back = berth(&home, &strs(&with(&["rollback", "support"]))).await;
    assert!(back.ok().contains("v2 100%"), "{}", back.stdout);
    let versions = berth(&home, &strs(&with(&["versions", "support"]))).await;
    assert_eq!(versions.ok().lines().count(), 3, "{}", versions.stdout);
    // A symlink in the directory stops the deploy before anything is sent.
    std::os::unix::fs::symlink("/etc/passwd", agent.join("passwd")).unwrap();
    let err = berth(&home, &strs(&with(&["deploy", &agent_dir]))).await;
    assert!(err.fails().contains("symlink"), "{}", err.stderr);
}

/// A `berth serve --demo` server (agent `assistant` on `mock/echo`), and the CLI pointed
/// at it by `BERTH_URL`/`BERTH_TOKEN` with the demo's admin key.
struct Demo {
    server: Server,
    key: String,
    home: PathBuf,
    dir: tempfile::TempDir,
}

impl Demo {
    async fn start() -> Demo {
        Self::start_with_config(None).await
    }

    /// A demo server with `config` as its berth.toml (if any).
    async fn start_with_config(config: Option<&str>) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let file = dir.path().join("berth.toml");
        let mut args = vec!["--demo"];
        if let Some(text) = config {
            std::fs::write(&file, text).unwrap();
            args.extend(["--config", file.to_str().unwrap()]);
        }
        let server = Server::start(&data, &args, &[]).await;
        let key = std::fs::read_to_string(data.join("demo-key")).unwrap();
        let home = dir.path().join("home");
        Demo {
            server,
            key,
            home,
            dir,
        }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("BERTH_URL", self.server.url.as_str()),
            ("BERTH_TOKEN", self.key.as_str()),
        ]
    }

    async fn cli(&self, args: &[&str]) -> Run {
        berth_with(&self.home, args, &self.env(), None).await
    }

    async fn cli_stdin(&self, args: &[&str], stdin: &str) -> Run {
        berth_with(&self.home, args, &self.env(), Some(stdin)).await
    }

    /// `berth <args>` left running, its output piped.
    fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .env("XDG_CONFIG_HOME", &self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for k in inherited_berth_vars() {
            cmd.env_remove(k);
        }
        cmd.envs(self.env()).spawn().unwrap()
    }

    /// A file in the test's directory with `text` in it; its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// The run's status, as `berth runs show --json` reports it.
    async fn status_of(&self, id: &str) -> String {
        let run = self.cli(&["runs", "show", id, "--json"]).await.json();
        run["status"].as_str().unwrap().to_owned()
    }

    async fn wait_for(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = self.status_of(id).await;
            if status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} is {status}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `id` of every entry of a list answer.
fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads lines until one contains `needle`; returns that line.
async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    needle: &str,
) -> String {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?} in time"))
            .unwrap()
            .unwrap_or_else(|| panic!("the output ended before a line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

#[tokio::test]
async fn run_runs_logs_and_usage_of_the_demo_agent() {
    let demo = Demo::start().await;

    // The answer alone on stdout; which run it was, and its cost, on stderr.
    let run = demo.cli(&["run", "assistant", "hello there"]).await;
    assert_eq!(run.ok(), "hello there\n");
    let trailer = run.stderr.trim();
    assert!(
        trailer.starts_with("run_")
            && trailer.contains("assistant v1 · succeeded · 1 LLM call(s)")
            && trailer.contains("$0.0000"),
        "{trailer}"
    );
    let first = trailer.split_whitespace().next().unwrap().to_owned();

    // A thread: started with `new`, continued by id.
    let a = demo
        .cli(&["run", "assistant", "one", "--thread", "new", "--json"])
        .await
        .json();
    let thread = a["thread"].as_str().unwrap().to_owned();
    assert!(thread.starts_with("thr_"), "{a}");
    let b = demo
        .cli(&["run", "assistant", "two", "--thread", &thread, "--json"])
        .await
        .json();
    assert_eq!(
        (b["thread"].as_str(), b["output"].as_str()),
        (Some(thread.as_str()), Some("two"))
    );
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    // An explicit version (the demo key is an admin, so it may), and one that does not exist.
    let v = demo
        .cli(&["run", "assistant", "pinned", "--version", "1", "--json"])
        .await
        .json();
    assert_eq!(
        (v["version"].as_i64(), v["status"].as_str()),
        (Some(1), Some("succeeded"))
    );
    let newest = v["id"].as_str().unwrap();
    let err = demo.cli(&["run", "assistant", "x", "--version", "7"]).await;
    assert!(
        err.fails().contains("has no version 7") && err.stderr.contains("HTTP 404"),
        "{}",
        err.stderr
    );

    // An unknown agent: non-zero, the server's message, nothing on stdout.
    let err = demo.cli(&["run", "nope", "hello"]).await;
    assert!(
        err.fails().contains("no agent named 'nope'") && err.stderr.contains("HTTP 404"),
        "{}",
        err.stderr
    );
    assert_eq!(err.stdout, "");

    // runs list: a table of all four, and the filters reach the server.
    let list = demo.cli(&["runs", "list"]).await;
    let text = list.ok();
    assert!(text.starts_with("ID "), "{text}");
    for id in [first.as_str(), a, b, newest] {
        assert!(text.contains(id), "{id} missing from:\n{text}");
    }
    assert_eq!(text.lines().count(), 5, "{text}");
    let in_thread = demo
        .cli(&["runs", "list", "--thread", &thread, "--json"])
        .await
        .json();
    assert_eq!(ids(&in_thread), [b, a]);
    let one = demo
        .cli(&["runs", "list", "--limit", "1", "--json"])
        .await
        .json();
    assert_eq!(ids(&one), [newest]);
    let failed = demo
        .cli(&[
            "runs",
            "list",
            "--status",
            "failed",
            "--agent",
            "assistant",
            "--json",
        ])
        .await
        .json();
    assert_eq!(ids(&failed), Vec::<String>::new());

    // runs show and trace.
    let show = demo.cli(&["runs", "show", &first]).await;
    let text = show.ok();
    assert!(
        text.starts_with(&format!("{first}  assistant v1  succeeded"))
            && text.contains("1 LLM call(s)")
            && text.contains("\n  hello there"),
        "{text}"
    );
    let err = demo.cli(&["runs", "show", "run_nope"]).await;
    assert!(
        err.fails().contains("no run with id 'run_nope'"),
        "{}",
        err.stderr
    );
    let trace = demo.cli(&["runs", "trace", &first]).await;
    let lines: Vec<&str> = trace.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{}", trace.stdout);
    assert!(
        lines[0].starts_with("SEQ") && lines[0].contains("TYPE"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("1 ")
            && lines[1].contains("llm_call")
            && lines[1].contains("mock/echo via mock")
            && lines[1].ends_with(": hello there"),
        "{}",
        lines[1]
    );

    // logs: one line per run, oldest first; --limit keeps the newest.
    let logs = demo.cli(&["logs", "assistant"]).await;
    let lines: Vec<&str> = logs.ok().lines().collect();
    assert_eq!(lines.len(), 4, "{}", logs.stdout);
    assert!(
        lines[0].contains(&first) && lines[0].ends_with("hello there"),
        "{}",
        lines[0]
    );
    assert!(
        lines[3].contains(newest) && lines[3].contains("succeeded"),
        "{}",
        lines[3]
    );
    let logs = demo.cli(&["logs", "assistant", "--limit", "2"]).await;
    let lines: Vec<&str> = logs.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{}", logs.stdout);
    assert!(lines[1].contains(newest), "{}", logs.stdout);
    let err = demo
        .cli(&["logs", "assistant", "--token", "bk_wrong"])
        .await;
    assert!(err.fails().contains("HTTP 401"), "{}", err.stderr);

    // usage by model: the model calls of the four runs.
    let usage = demo.cli(&["usage", "--by", "model", "--json"]).await.json();
    let rows = usage["data"].as_array().unwrap();
    let echo = rows.iter().find(|r| r["model"] == "mock/echo").unwrap();
    assert_eq!(echo["requests"].as_i64(), Some(4), "{usage}");
    // The runs themselves are metered too (a run has no one model: its row has none).
    let runs: i64 = rows.iter().map(|r| r["runs"].as_i64().unwrap()).sum();
    assert_eq!(runs, 4, "{usage}");
    let usage = demo.cli(&["usage", "--by", "model"]).await;
    let lines: Vec<&str> = usage.ok().lines().collect();
    assert!(
        lines[0].starts_with("MODEL") && lines[0].ends_with("COST_USD"),
        "{}",
        usage.stdout
    );
    let echo_line = lines.iter().find(|l| l.starts_with("mock/echo")).unwrap();
    let cells: Vec<&str> = echo_line.split_whitespace().collect();
    assert_eq!(cells[..2], ["mock/echo", "4"], "{}", usage.stdout);
    assert!(
        cells.last().unwrap().starts_with("$0.0000"),
        "{}",
        usage.stdout
    );
    let err = demo.cli(&["usage", "--by", "colour"]).await;
    assert!(err.fails().contains("HTTP 400"), "{}", err.stderr);

    // The month's invoice, as a table, JSON and the server's CSV.
    let month = berth_core::clock::rfc3339(berth_core::clock::now_ms())[..7].to_owned();
    let inv = demo.cli(&["invoice", &month, "--json"]).await.json();
    let llm = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["model"] == "mock/echo")
        .unwrap()
        .clone();
    assert_eq!(llm["quantity"], 4, "{inv}");
    assert_eq!(
        inv["total_nano_usd"], inv["subtotal_nano_usd"],
        "no markup on the default plans"
    );
    let table = demo.cli(&["invoice", &month]).await;
    assert!(
        table.ok().contains("mock/echo") && table.stdout.contains("total"),
        "{}",
        table.stdout
    );
    let csv = demo.cli(&["invoice", &month, "--csv"]).await;
    assert!(
        csv.ok().starts_with("meter,provider,model,quantity"),
        "{}",
        csv.stdout
    );
    let bad = demo.cli(&["invoice", "2026-13"]).await;
    assert!(bad.fails().contains("not a month"), "{}", bad.stderr);
}

#[tokio::test]
async fn logs_follow_prints_runs_as_they_finish_until_ctrl_c() {
    let demo = Demo::start().await;
    demo.cli(&["run", "assistant", "before"]).await.ok();

    let mut follow = demo.spawn(&["logs", "assistant", "-f"]);
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let line = line_with(&mut lines, "run_").await;
    assert!(line.ends_with("before"), "{line}");
    for input in ["during one", "during two"] {
        demo.cli(&["run", "assistant", input]).await.ok();
        // The very next line is the new run: the old one is not printed again.
        let line = line_with(&mut lines, "run_").await;
        assert!(
            line.contains("succeeded") && line.ends_with(input),
            "{line}"
        );
    }

    let kill = std::process::Command::new("kill")
        .args(["-INT", &follow.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), follow.wait())
        .await
        .expect("logs -f did not stop on SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(lines.next_line().await.unwrap(), None, "nothing more");
}

#[tokio::test]
async fn policy_and_providers_from_the_cli() {
    let demo = Demo::start().await;
    let revision = async || demo.cli(&["policy", "get", "--json"]).await.json()["revision"].clone();

    // No policy yet: an empty document.
    let get = demo.cli(&["policy", "get"]).await;
    assert_eq!(get.ok().trim(), "{}");
    assert!(get.stderr.contains("revision 0"), "{}", get.stderr);

    // From a TOML file: stored as the same JSON.
    let toml_file = demo.file(
        "policy.toml",
        "[models]\nallow = [\"openai/*\"]\n[limits]\nrequests_per_minute = 100\n",
    );
    let set = demo.cli(&["policy", "set", &toml_file]).await;
    assert_eq!(set.ok().trim(), "Policy set: revision 1");
    let got = demo.cli(&["policy", "get", "--json"]).await.json();
    assert_eq!(got["revision"], 1);
    assert_eq!(
        got["policy"]["models"]["allow"],
        serde_json::json!(["openai/*"])
    );
    assert_eq!(got["policy"]["limits"]["requests_per_minute"], 100);

    // The policy applies: the demo's model is no longer allowed, so its run fails, and the
    // command says so with a non-zero exit.
    let run = demo.cli(&["run", "assistant", "hello"]).await;
    let err = run.fails();
    assert!(
        err.contains("failed: model 'mock/echo' is not allowed") && err.contains("run run_"),
        "{err}"
    );
    assert_eq!(run.stdout, "");

    // Round trip: what `get` prints, `set` takes back unchanged.
    let printed = demo.cli(&["policy", "get"]).await.ok().to_owned();
    let json_file = demo.file("policy.json", &printed);
    let set = demo.cli(&["policy", "set", &json_file]).await;
    assert_eq!(set.ok().trim(), "Policy set: revision 2");
    assert_eq!(demo.cli(&["policy", "get"]).await.ok(), printed);

    // From standard input, JSON without a file name.
    let set = demo
        .cli_stdin(
            &["policy", "set", "-", "--json"],
            r#"{"models": {"allow": ["mock/*"]}}"#,
        )
        .await;
    assert_eq!(set.json()["revision"], 3);
    let run = demo.cli(&["run", "assistant", "allowed again"]).await;
    assert_eq!(run.ok(), "allowed again\n");

    // Refused documents change nothing: one the server rejects, one that does not parse,
    // an empty one, a missing file.
    let bad = demo
        .cli_stdin(&["policy", "set", "-"], r#"{"model": {}}"#)
        .await;
    let err = bad.fails();
    assert!(
        err.contains("unknown field `model`") && err.contains("HTTP 422"),
        "{err}"
    );
    let broken = demo.file("broken.toml", "models = = 1\n");
    let bad = demo.cli(&["policy", "set", &broken]).await;
    assert!(
        bad.fails().contains("broken.toml: TOML parse error"),
        "{}",
        bad.stderr
    );
    let bad = demo.cli_stdin(&["policy", "set", "-"], "\n").await;
    assert!(bad.fails().contains("- is empty"), "{}", bad.stderr);
    let bad = demo.cli(&["policy", "set", "/no/such/policy.json"]).await;
    assert!(
        bad.fails().contains("cannot read /no/such/policy.json"),
        "{}",
        bad.stderr
    );
    assert_eq!(revision().await, 3);

    // Providers: the key's secret first, then the providers that name it.
    demo.cli_stdin(&["secrets", "set", "OPENAI_KEY"], "sk-test-123\n")
        .await
        .ok();
    let set = demo
        .cli(&[
            "providers",
            "set",
            "myopenai",
            "--kind",
            "openai",
            "--key-secret",
            "OPENAI_KEY",
        ])
        .await;
    assert!(
        set.ok()
            .contains("Set provider myopenai (openai, key from secret OPENAI_KEY)"),
        "{}",
        set.stdout
    );
    let set = demo
        .cli(&[
            "providers",
            "set",
            "compat",
            "--kind",
            "openai-compatible",
            "--base-url",
            "https://1.1.1.1/v1",
            "--key-secret",
            "OPENAI_KEY",
            "--json",
        ])
        .await
        .json();
    assert_eq!(set["base_url"], "https://1.1.1.1/v1");
    let list = demo.cli(&["providers", "list"]).await;
    let text = list.ok();
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("myopenai") && l.contains("OPENAI_KEY"))
            && text
                .lines()
                .any(|l| l.starts_with("compat") && l.contains("https://1.1.1.1/v1")),
        "{text}"
    );
    assert!(!text.contains("sk-test-123"), "{text}");
    let bad = demo
        .cli(&[
            "providers",
            "set",
            "other",
            "--kind",
            "openai",
            "--key-secret",
            "MISSING",
        ])
        .await;
    assert!(
        bad.fails().contains("no secret named 'MISSING'"),
        "{}",
        bad.stderr
    );
    let bad = demo
        .cli(&[
            "providers",
            "set",
            "other",
            "--kind",
            "gemini",
            "--key-secret",
            "OPENAI_KEY",
        ])
        .await;
    assert!(
        bad.fails().contains("kind must be one of"),
        "{}",
        bad.stderr
    );

    let del = demo.cli(&["providers", "delete", "myopenai"]).await;
    assert_eq!(del.ok().trim(), "Deleted provider myopenai");
    let left = demo.cli(&["providers", "list", "--json"]).await.json();
    let names: Vec<&str> = left["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["compat"]);
    let again = demo.cli(&["providers", "delete", "myopenai"]).await;
    assert!(
        again.fails().contains("no provider named 'myopenai'") && again.stderr.contains("HTTP 404"),
        "{}",
        again.stderr
    );
}

/// The line of a table in `text` whose first column is `first`.
fn row_of<'a>(text: &'a str, first: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{text}"))
}

#[tokio::test]
async fn mcp_servers_and_tools_from_the_cli() {
    use berth_testkit::mock_mcp::{MockMcp, Revision};
    let mock = MockMcp::start(Revision::Modern).await;
    // The mock listens on loopback, which the egress guard refuses unless allowed.
    let demo = Demo::start_with_config(Some("[egress]\nallow_private = [\"127.0.0.0/8\"]\n")).await;
    demo.cli_stdin(&["secrets", "set", "CRM_TOKEN"], "tok-crm-123\n")
        .await
        .ok();

    // Add: the discovered tools as a table; the header is filled from the secret, with
    // the prefix given after it.
    let add = demo
        .cli(&[
            "mcp",
            "add",
            "crm",
            &mock.url,
            "--header",
            "Authorization=secret:CRM_TOKEN",
            "--prefix",
            "Bearer ",
        ])
        .await;
    let text = add.ok();
    assert!(
        text.starts_with(&format!(
            "Added MCP server crm ({}, protocol 2026-07-28)",
            mock.url
        )),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("NAME") && l.contains("DESCRIPTION")),
        "{text}"
    );
    assert!(
        row_of(text, "crm__echo").contains("Answers with its arguments as JSON."),
        "{text}"
    );
    assert!(
        row_of(text, "crm__add").contains("Adds two integers."),
        "{text}"
    );
    // The tool with an unusable schema is left out, and the note says so.
    assert!(!text.contains("crm__broken"), "{text}");
    assert!(add.stderr.contains("broken"), "{}", add.stderr);
    assert!(!text.contains("tok-crm-123"), "{text}");
    let sent: Vec<String> = mock
        .headers()
        .iter()
        .filter_map(|h| h.get("authorization")?.to_str().ok().map(str::to_owned))
        .collect();
    assert!(
        !sent.is_empty() && sent.iter().all(|v| v == "Bearer tok-crm-123"),
        "{sent:?}"
    );

    // List: name, url, status, tools, checked_at, protocol.
    let listed = demo.cli(&["mcp", "list", "--json"]).await.json();
    let server = &listed["data"][0];
    assert_eq!(server["name"], "crm");
    assert_eq!(server["status"], "healthy");
    assert_eq!(
        server["headers"]["Authorization"],
        json!({"secret": "CRM_TOKEN", "prefix": "Bearer "})
    );
    let count = server["tool_count"].as_u64().unwrap();
    assert!(count >= 7, "{server}");
    let list = demo.cli(&["mcp", "list"]).await;
    let text = list.ok();
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "URL", "STATUS", "TOOLS", "CHECKED_AT", "PROTOCOL"]
    );
    let row: Vec<&str> = row_of(text, "crm").split_whitespace().collect();
    assert_eq!(row.len(), 6, "{text}");
    assert_eq!(
        (row[1], row[2], row[3], row[5]),
        (
            mock.url.as_str(),
            "healthy",
            count.to_string().as_str(),
            "2026-07-28"
        ),
        "{text}"
    );
    assert!(row[4].starts_with("20") && row[4].contains('T'), "{text}");

    // Refresh: a tool the server added since shows up.
    mock.add_tool("later").await;
    let refresh = demo.cli(&["mcp", "refresh", "crm"]).await;
    let text = refresh.ok();
    assert!(text.starts_with("Refreshed MCP server crm"), "{text}");
    assert!(
        row_of(text, "crm__later").contains("Added later."),
        "{text}"
    );
    let refreshed = demo.cli(&["mcp", "refresh", "crm", "--json"]).await.json();
    assert_eq!(refreshed["tool_count"].as_u64(), Some(count + 1));
    assert!(
        refreshed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "crm__later"),
        "{refreshed}"
    );

    // Tools: the built-in ones and the server's, with the server they come from.
    let tools = demo.cli(&["tools"]).await;
    let text = tools.ok();
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SERVER", "DESCRIPTION"]);
    let row: Vec<&str> = row_of(text, "crm__add").split_whitespace().collect();
    assert_eq!(row[..3], ["crm__add", "crm", "Adds"], "{text}");
    assert!(row_of(text, "mock__echo").contains(" mock "), "{text}");
    let all = demo.cli(&["tools", "--json"]).await.json();
    let add_tool = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "crm__add")
        .unwrap();
    assert_eq!(add_tool["server"], "crm");
    assert_eq!(add_tool["input_schema"]["required"], json!(["a", "b"]));

    // `--json` for add too; then remove both.
    let second = demo
        .cli(&["mcp", "add", "crm2", &mock.url, "--json"])
        .await
        .json();
    assert_eq!(second["name"], "crm2");
    assert!(
        second["headers"].as_object().unwrap().is_empty(),
        "{second}"
    );
    assert!(!second["tools"].as_array().unwrap().is_empty(), "{second}");
    let removed = demo.cli(&["mcp", "remove", "crm"]).await;
    assert_eq!(removed.ok().trim(), "Removed MCP server crm");
    let removed = demo.cli(&["mcp", "remove", "crm2", "--json"]).await.json();
    assert_eq!(removed, json!({"deleted": "crm2"}));
    let left = demo.cli(&["mcp", "list", "--json"]).await.json();
    assert_eq!(left["data"], json!([]));
    let tools = demo.cli(&["tools"]).await;
    assert!(!tools.ok().contains("crm"), "{}", tools.stdout);
    let again = demo.cli(&["mcp", "remove", "crm"]).await;
    assert!(
        again.fails().contains("no MCP server named 'crm'") && again.stderr.contains("HTTP 404"),
        "{}",
        again.stderr
    );
    let again = demo.cli(&["mcp", "refresh", "crm"]).await;
    assert!(again.fails().contains("HTTP 404"), "{}", again.stderr);

    // Header values come from secrets only: a literal is a usage error, sent nowhere and
    // not echoed; so are a header without '=' and a --prefix before any --header.
    let requests = mock.headers().len();
    let bad = demo
        .cli(&[
            "mcp",
            "add",
            "crm",
            &mock.url,
            "--header",
            "Authorization=Bearer tok-literal-456",
        ])
        .await;
    let err = bad.fails();
    assert!(
        err.contains("--header Authorization: the value must be secret:SECRET")
            && err.contains("literal header values are not accepted"),
        "{err}"
    );
    assert!(!err.contains("tok-literal-456"), "{err}");
    let bad = demo
        .cli(&["mcp", "add", "crm", &mock.url, "--header", "Authorization"])
        .await;
    assert!(
        bad.fails().contains("is not HEADER=secret:SECRET"),
        "{}",
        bad.stderr
    );
    let bad = demo
        .cli(&[
            "mcp",
            "add",
            "crm",
            &mock.url,
            "--prefix",
            "Bearer ",
            "--header",
            "Authorization=secret:CRM_TOKEN",
        ])
        .await;
    assert!(
        bad.fails().contains("comes before any --header"),
        "{}",
        bad.stderr
    );
    assert_eq!(
        mock.headers().len(),
        requests,
        "a refused add reached the server"
    );
    // A secret that does not exist: the server's reason.
    let bad = demo
        .cli(&[
            "mcp",
            "add",
            "crm",
            &mock.url,
            "--header",
            "Authorization=secret:NO_SUCH_SECRET",
        ])
        .await;
    let err = bad.fails();
    assert!(
        err.contains("the secret 'NO_SUCH_SECRET' does not exist") && err.contains("HTTP 422"),
        "{err}"
    );
    let left = demo.cli(&["mcp", "list", "--json"]).await.json();
    assert_eq!(left["data"], json!([]));
}

/// The first approval id (`apr_…`) in `text`.
fn approval_in(text: &str) -> String {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("apr_"))
        .unwrap_or_else(|| panic!("no approval id in {text:?}"))
        .to_owned()
}

#[tokio::test]
async fn stream_async_cancel_and_approvals_from_the_cli() {
    let demo = Demo::start().await;

    // A streamed run prints the answer as it comes and ends with the run.
    let run = demo
        .cli(&["run", "assistant", "hello stream", "--stream"])
        .await;
    assert_eq!(run.ok(), "hello stream\n");
    assert!(
        run.stderr.contains("assistant v1 · succeeded"),
        "{}",
        run.stderr
    );
    let events = demo
        .cli(&["run", "assistant", "hello json", "--stream", "--json"])
        .await;
    let events: Vec<Value> = events
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.first().unwrap()["event"],
        "run.started",
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run.completed", "{events:?}");
    assert_eq!(last["data"]["run"]["output"], "hello json");
    let text: String = events
        .iter()
        .filter(|e| e["event"] == "message.delta")
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "hello json");

    // An agent whose tool call waits for a human: mock/tools calls the offered tool the
    // input names, and the manifest gates that tool.
    std::fs::create_dir(demo.dir.path().join("gated")).unwrap();
    let manifest = "name = \"gated\"\n[model]\nname = \"mock/tools\"\n[tools]\nuse = [\"mock__echo\"]\napproval = [\"mock__echo\"]\n";
    demo.file("gated/agent.toml", manifest);
    let gated = demo.dir.path().join("gated");
    demo.cli(&["deploy", gated.to_str().unwrap()]).await.ok();
    let ask = "please call mock__echo";

    // Sync: answered while waiting; listed; approved; the run then finishes.
    let run = demo.cli(&["run", "gated", ask, "--json"]).await.json();
    assert_eq!(run["status"], "waiting_approval", "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let text = demo.cli(&["run", "gated", ask]).await;
    assert!(
        text.ok().contains("is waiting for approval"),
        "{}",
        text.stdout
    );
    let pending = demo
        .cli(&["approvals", "list", "--status", "pending", "--json"])
        .await
        .json();
    assert_eq!(ids(&pending).len(), 2, "{pending}");
    let first = pending["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["run"] == run_id.as_str())
        .unwrap_or_else(|| panic!("no approval for {run_id}: {pending}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = demo
        .cli(&["approvals", "list", "--status", "pending"])
        .await;
    assert!(listed.ok().contains(&first), "{}", listed.stdout);
    let ok = demo
        .cli(&["approvals", "approve", &first, "--reason", "looks fine"])
        .await;
    assert!(
        ok.ok().starts_with(&format!("Approved {first}")),
        "{}",
        ok.stdout
    );
    demo.wait_for(&run_id, "succeeded").await;
    let trace = demo.cli(&["runs", "trace", &run_id]).await;
    assert!(trace.ok().contains("approval"), "{}", trace.stdout);

    // Deny the other one: it leaves the pending list, and cannot be decided twice.
    let other = ids(&pending).into_iter().find(|id| *id != first).unwrap();
    let no = demo
        .cli(&["approvals", "deny", &other, "--reason", "not today"])
        .await;
    assert!(
        no.ok().starts_with(&format!("Denied {other}")),
        "{}",
        no.stdout
    );
    let pending = demo
        .cli(&["approvals", "list", "--status", "pending", "--json"])
        .await
        .json();
    assert_eq!(ids(&pending), Vec::<String>::new());
    demo.cli(&["approvals", "approve", &other]).await.fails();

    // Async: queued at once; cancelled while it waits.
    let queued = demo
        .cli(&["run", "gated", ask, "--async", "--json"])
        .await
        .json();
    assert!(
        matches!(queued["status"].as_str(), Some("queued" | "running")),
        "{queued}"
    );
    let id = queued["id"].as_str().unwrap().to_owned();
    demo.wait_for(&id, "waiting_approval").await;
    let cancel = demo.cli(&["runs", "cancel", &id]).await;
    assert_eq!(cancel.ok().trim(), format!("Run {id}: cancelled"));
    assert_eq!(demo.status_of(&id).await, "cancelled");
    let shown = demo.cli(&["run", "assistant", "x", "--async"]).await;
    assert!(
        shown.ok().contains("berth runs show run_"),
        "{}",
        shown.stdout
    );

    // Streamed and gated: the approval line appears, and the decision lets the stream end.
    let mut streamed = demo.spawn(&["run", "gated", ask, "--stream"]);
    let mut err_lines = tokio::io::BufReader::new(streamed.stderr.take().unwrap()).lines();
    let line = line_with(&mut err_lines, "waits for approval").await;
    assert!(line.contains("mock__echo"), "{line}");
    demo.cli(&["approvals", "approve", &approval_in(&line)])
        .await
        .ok();
    let status = tokio::time::timeout(Duration::from_secs(15), streamed.wait())
        .await
        .expect("the streamed run did not end after its approval")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // A streamed run that fails exits non-zero with the run's error.
    let deny_mock = demo.file("deny-mock.json", r#"{"models": {"allow": ["openai/*"]}}"#);
    demo.cli(&["policy", "set", &deny_mock]).await.ok();
    let run = demo.cli(&["run", "assistant", "hello", "--stream"]).await;
    assert!(run.fails().contains("is not allowed"), "{}", run.stderr);
}

/// `POST <url><path>` with a bearer token and a JSON body: (status, body).
async fn post(url: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `GET /v1/runs/{id}` until `done` holds; fails after 15 s.
async fn run_until(url: &str, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, run) = get(url, &format!("/v1/runs/{id}"), key).await;
        if status == 200 && done(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} never got there: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The model calls of agent `looper` in the tenant's usage ledger.
async fn looper_llm_calls(url: &str, key: &str) -> u64 {
    let (_, usage) = get(url, "/v1/usage?group_by=agent", key).await;
    usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent"] == "looper")
        .map_or(0, |r| r["llm_calls"].as_u64().unwrap())
}

#[tokio::test]
async fn a_crash_interrupts_running_runs_keeps_their_usage_and_queued_runs_survive() {
    let mock = berth_testkit::mock_llm::MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[runs]\nworkers = 1\nlease = \"1s\"\n\n[prices.\"*\"]\ninput = 1.0\noutput = 2.0\n\n[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"UP_KEY\"\n",
            mock.url
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let env = [("UP_KEY", "sk-upstream-crash-test")];
    let server = Server::start(&data, &args, &env).await;
    let op = operator_token(&data);
    let (_, key) = tenant_with_key(&server, &op, "acme", "admin").await;
    // A run that keeps calling a tool, each model turn taking 700 ms: it is mid-run when
    // the process dies.
    let looper = json!({"manifest": {"name": "looper", "model": {"name": "up/tools-slow-700"},
                        "tools": {"use": ["mock__echo"]}, "limits": {"max_steps": 30, "timeout": "60s"}}});
    post_created(&server.url, "/v1/agents/looper/versions", &key, looper).await;
    let echo = json!({"manifest": {"name": "echo", "model": {"name": "mock/echo"}}});
    post_created(&server.url, "/v1/agents/echo/versions", &key, echo).await;
    let (status, first) = post(
        &server.url,
        "/v1/agents/looper/runs",
        &key,
        json!({"input": "loop", "async": true}),
    )
    .await;
    assert_eq!(status, 202, "{first}");
    let first = first["id"].as_str().unwrap().to_owned();
    // The only worker is busy, so this one waits in the queue.
    let (_, second) = post(
        &server.url,
        "/v1/agents/echo/runs",
        &key,
        json!({"input": "after the crash", "async": true}),
    )
    .await;
    let second = second["id"].as_str().unwrap().to_owned();
    // The heartbeat records usage so far with the lease; the usage recorder writes the
    // calls' events in batches every 200 ms (what a SIGKILL can lose is that last batch).
    run_until(&server.url, &key, &first, |r| {
        r["usage"]["llm_calls"].as_u64() >= Some(2)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while looper_llm_calls(&server.url, &key).await < 2 {
        assert!(Instant::now() < deadline, "usage never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, queued) = get(&server.url, &format!("/v1/runs/{second}"), &key).await;
    assert_eq!(queued["status"], "queued");
    // Its steps are stored as they happen (with the heartbeat), not only at its end.
    let trace_of = |url: String, key: String, id: String| async move {
        let (_, t) = get(&url, &format!("/v1/runs/{id}/trace"), &key).await;
        let kinds: Vec<String> = t["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["type"].as_str().unwrap().to_owned())
            .collect();
        kinds
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let before_crash = loop {
        let kinds = trace_of(server.url.clone(), key.clone(), first.clone()).await;
        if kinds.iter().filter(|k| *k == "tool_call").count() >= 1 {
            break kinds;
        }
        assert!(
            Instant::now() < deadline,
            "no step stored while running: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    drop(server); // SIGKILL: no drain, no goodbye
    let server = Server::start(&data, &args, &env).await;
    let dead = run_until(&server.url, &key, &first, |r| r["status"] != "running").await;
    assert_eq!(dead["status"], "failed", "{dead}");
    assert_eq!(dead["error"]["code"], "interrupted");
    assert!(dead["usage"]["llm_calls"].as_u64().unwrap() >= 2, "{dead}");
    let survived = run_until(&server.url, &key, &second, |r| r["status"] == "succeeded").await;
    assert_eq!(survived["output"], "after the crash");
    // The model calls the interrupted run made are billed.
    assert!(looper_llm_calls(&server.url, &key).await >= 2);
    // Its trace keeps what was stored before the crash, and the tool calls in it are
    // billed as well (issue 14, item 25).
    let after = trace_of(server.url.clone(), key.clone(), first.clone()).await;
    assert!(
        after.len() >= before_crash.len() && after.starts_with(&before_crash),
        "{before_crash:?} then {after:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, usage) = get(&server.url, "/v1/usage?group_by=agent", &key).await;
        let tools = usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["agent"] == "looper")
            .map_or(0, |r| r["tool_calls"].as_u64().unwrap_or(0));
        if tools >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the interrupted run's tool calls were not billed: {usage}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, running) = get(&server.url, "/v1/runs?status=running", &key).await;
    assert!(running["data"].as_array().unwrap().is_empty(), "{running}");
}

/// Issue 14, item 15: a gateway call that was answered is billed, even when the process
/// is killed with SIGKILL right after, under load: its usage is journaled (synced to local
/// disk) before the answer ends and stored from the journal at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_no_answered_call() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]).await;
    let op = operator_token(&data);
    let (tenant, key) = tenant_with_key(&server, &op, "journal", "admin").await;
    // Plan pro: its rate limits are not what is measured.
    let r = reqwest::Client::new()
        .patch(format!("{}/v1/tenants/{tenant}", server.url))
        .bearer_auth(&op)
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (url, key, answered, stop) = (
            server.url.clone(),
            key.clone(),
            answered.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "bill me"}]}))
                    .send()
                    .await;
                let Ok(r) = r else {
                    return; // the server is gone
                };
                // Answered: the whole body arrived.
                if r.status() == 200 && r.bytes().await.is_ok() {
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(server); // SIGKILL, with calls in flight
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(answered > 50, "only {answered} calls were answered");

    let server = Server::start(&data, &[], &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let billed = loop {
        let (_, usage) = get(&server.url, "/v1/usage", &key).await;
        let billed = usage["data"][0]["llm_calls"].as_u64().unwrap_or(0);
        if billed >= answered || Instant::now() > deadline {
            break billed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{answered} calls answered, {billed} billed");
    // Every answered call is billed once; a call in flight at the kill (16 at most) may be
    // billed too, if its usage was recorded before the answer was cut.
    assert!(
        billed >= answered && billed <= answered + 16,
        "{answered} calls answered, {billed} billed"
    );
}

/// Issue 14, item 12: a call's budget settlement that could not land (the database went
/// away between the call's reservation and its end) is journaled before the answer ends,
/// so a SIGKILL loses no money: after a restart the reservation is released and the cost
/// charged, exactly what the usage says.
#[tokio::test]
async fn a_settlement_pending_at_a_sigkill_is_charged_after_the_restart() {
    let Some(db) = berth_testkit::pg_test_database().await else {
        return;
    };
    let (mut proxy, via_proxy) = berth_testkit::tcp_proxy::TcpProxy::in_front_of(&db.url).await;
    let mock = berth_testkit::mock_llm::MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{via_proxy}\"\n\n[prices.\"*\"]\ninput = 1.0\noutput = 2.0\n\n[egress]\nallow_private = [\"127.0.0.0/8\"]\n\n[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"UP_KEY\"\n",
            mock.url
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let env = [("UP_KEY", "sk-upstream-settle-test")];
    let server = Server::start(&data, &args, &env).await;
    let op = operator_token(&data);
    let (_, key) = tenant_with_key(&server, &op, "acme", "admin").await;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    // A first call settles normally (and caches the key and policy).
    let (status, warm) = post(&server.url, "/v1/chat/completions", &key, chat("mock/echo")).await;
    assert_eq!(status, 200, "{warm}");
    // The second holds its reservation, then the database goes away while it waits on
    // its model: its settlement cannot land before the process is killed.
    let slow = tokio::spawn({
        let (url, key, body) = (server.url.clone(), key.clone(), chat("up/slow-1500"));
        async move { post(&url, "/v1/chat/completions", &key, body).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    let (status, answer) = slow.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    drop(server); // SIGKILL: no drain, no goodbye

    proxy.restore().await;
    let server = Server::start(&data, &args, &env).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, usage) = get(&server.url, "/v1/usage", &key).await;
        let (_, summary) = get(&server.url, "/v1/usage/summary", &key).await;
        let calls = usage["data"][0]["llm_calls"].as_u64().unwrap_or(0);
        let cost = usage["data"][0]["cost_usd"].as_f64().unwrap_or(-1.0);
        let budgets = summary["budgets"].as_array().cloned().unwrap_or_default();
        let settled = !budgets.is_empty()
            && budgets.iter().all(|b| {
                b["reserved_usd"].as_f64() == Some(0.0)
                    && (b["spent_usd"].as_f64().unwrap_or(-1.0) - cost).abs() < 1e-9
            });
        if calls == 2 && settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pending settlement was not charged after the restart: {calls} calls billed, \
             cost {cost}, budgets {budgets:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
