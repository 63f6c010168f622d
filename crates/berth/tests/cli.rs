//! End-to-end tests of the real `berth` binary: `berth serve` as a child process (operator
//! token, `--demo`, config errors, graceful shutdown on SIGTERM) and the client commands
//! (login, me, tenants, keys, secrets, audit) with human and `--json` output, and failures
//! that exit non-zero with the server's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let resp = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
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
