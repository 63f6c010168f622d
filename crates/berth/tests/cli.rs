//! The real `berth` binary end to end: `serve` (operator token, demo, config errors,
//! graceful shutdown on SIGTERM) and the client commands (login, tenants, keys, secrets,
//! audit), with human and `--json` output and non-zero exits carrying the server's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_berth");

/// A `berth serve` child process, killed on drop.
struct Server {
    child: Option<Child>,
    url: String,
    stderr_path: PathBuf,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let stderr_path = data_dir.with_extension(format!("stderr-{n}"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(BIN);
        // Port 0: the kernel picks a free port, so parallel tests never collide; the
        // server prints the address it got.
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("BERTH_OPERATOR_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = loop {
            let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            if let Some(rest) = text.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("server exited with {status}: {text}");
            }
            assert!(Instant::now() < deadline, "server did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        Server {
            child: Some(child),
            url,
            stderr_path,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the process to exit by itself; returns its exit status.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a client command with an isolated saved login (`XDG_CONFIG_HOME`).
fn cli(config_home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("BERTH_URL")
        .env_remove("BERTH_TOKEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "command should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn operator_token_is_generated_once_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]);
    let token = std::fs::read_to_string(data.join("operator-token")).unwrap();
    assert!(token.starts_with("bop_"));
    assert_eq!(mode(&data.join("operator-token")), 0o600);
    assert_eq!(mode(&data.join("master.key")), 0o600);
    assert!(
        server.stderr().contains(&token),
        "the token is printed at first start"
    );
    drop(server);
    let server = Server::start(&data, &[], &[]);
    assert!(!server.stderr().contains(&token), "not printed again");
    assert_eq!(
        std::fs::read_to_string(data.join("operator-token")).unwrap(),
        token
    );
}

#[test]
fn client_commands_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let op = "bop_cli_test_operator_token_123456";
    let server = Server::start(
        &dir.path().join("data"),
        &[],
        &[("BERTH_OPERATOR_TOKEN", op)],
    );
    let url = server.url.as_str();
    let base = ["--url", url, "--token", op];

    // Operator: tenants, with text and JSON output.
    let text = ok(&cli(
        &home,
        &[
            &["tenants", "create", "acme", "--plan", "pro"][..],
            &base[..],
        ]
        .concat(),
        None,
    ));
    assert!(
        text.contains("Created tenant acme") && text.contains("plan pro"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&cli(
        &home,
        &[&["tenants", "create", "globex", "--json"][..], &base[..]].concat(),
        None,
    )))
    .unwrap();
    assert_eq!(json["name"], "globex");
    let tenant = json["id"].as_str().unwrap().to_owned();
    let list = ok(&cli(
        &home,
        &[&["tenants", "list"][..], &base[..]].concat(),
        None,
    ));
    assert!(
        list.contains("acme") && list.contains("globex") && list.starts_with("ID"),
        "{list}"
    );
    let err = fails(&cli(
        &home,
        &[&["tenants", "create", "bad name!"][..], &base[..]].concat(),
        None,
    ));
    assert!(err.contains("tenant name"), "{err}");

    // The operator mints the tenant's first admin key; env vars work as well as flags.
    let mut cmd = Command::new(BIN);
    let out = cmd
        .args([
            "keys", "create", "--name", "first", "--role", "admin", "--tenant", &tenant, "--json",
        ])
        .env("XDG_CONFIG_HOME", &home)
        .env("BERTH_URL", url)
        .env("BERTH_TOKEN", op)
        .output()
        .unwrap();
    let created: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let admin = created["key"].as_str().unwrap().to_owned();
    assert!(admin.starts_with("bk_"));

    // Login saves URL and token privately; later commands need neither flag.
    let text = ok(&cli(
        &home,
        &["login", "--url", url, "--token", &admin],
        None,
    ));
    assert!(text.contains("tenant globex as admin"), "{text}");
    let saved = home.join("berth/login.toml");
    assert_eq!(mode(&saved), 0o600);
    let me = ok(&cli(&home, &["me"], None));
    assert!(me.contains("globex") && me.contains("admin"), "{me}");

    // Keys: the secret is shown at creation only.
    let dev = ok(&cli(
        &home,
        &["keys", "create", "--name", "dev", "--role", "developer"],
        None,
    ));
    let dev_key = dev
        .lines()
        .find(|l| l.starts_with("bk_"))
        .unwrap()
        .to_owned();
    let keys_json = ok(&cli(&home, &["keys", "list", "--json"], None));
    let keys: serde_json::Value = serde_json::from_str(&keys_json).unwrap();
    assert_eq!(keys["data"].as_array().unwrap().len(), 2);
    assert!(
        !keys_json.contains(&dev_key) && !keys_json.contains(&admin),
        "a key leaked in the list"
    );

    // Secrets: value on stdin, never printed back.
    let value = "s3cr3t-value-xyz-987";
    ok(&cli(
        &home,
        &["secrets", "set", "API_TOKEN"],
        Some(&format!("{value}\n")),
    ));
    let secrets = ok(&cli(&home, &["secrets", "list"], None));
    assert!(
        secrets.contains("API_TOKEN") && !secrets.contains(value),
        "{secrets}"
    );
    ok(&cli(&home, &["secrets", "delete", "API_TOKEN"], None));
    let err = fails(&cli(&home, &["secrets", "delete", "API_TOKEN"], None));
    assert!(err.contains("no secret named 'API_TOKEN'"), "{err}");

    // Audit: listed and verified.
    let audit = ok(&cli(&home, &["audit", "list"], None));
    assert!(
        audit.contains("key.create")
            && audit.contains("secret.put")
            && audit.contains("secret.delete"),
        "{audit}"
    );
    let verify = ok(&cli(&home, &["audit", "verify"], None));
    assert!(verify.starts_with("ok:"), "{verify}");

    // A viewer cannot mint keys: non-zero exit with the server's reason.
    let viewer = serde_json::from_str::<serde_json::Value>(&ok(&cli(
        &home,
        &[
            "keys", "create", "--name", "v", "--role", "viewer", "--json",
        ],
        None,
    )))
    .unwrap();
    let viewer_key = viewer["key"].as_str().unwrap();
    let err = fails(&cli(
        &home,
        &[
            "keys", "create", "--name", "x", "--role", "viewer", "--token", viewer_key,
        ],
        None,
    ));
    assert!(err.contains("role 'admin'"), "{err}");

    // Revocation: the key stops working at once.
    let dev_id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "dev")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&cli(&home, &["keys", "revoke", &dev_id], None));
    let err = fails(&cli(&home, &["me", "--token", &dev_key], None));
    assert!(err.contains("not valid"), "{err}");

    // An unreachable server is a clear error too.
    let err = fails(&cli(&home, &["me", "--url", "http://127.0.0.1:1"], None));
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn config_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |file: Option<&str>, env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--data-dir"]).arg(dir.path().join("d"));
        if let Some(text) = file {
            let path = dir.path().join("berth.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    for (file, env, key) in [
        (Some("lisen = \"x\""), vec![], "lisen"),
        (Some("listen = \"nowhere\""), vec![], "listen"),
        (None, vec![("BERTH_NOPE", "1")], "nope"),
        (
            Some("[plans.free]\nrequests_per_minute = \"many\""),
            vec![],
            "plans.free.requests_per_minute",
        ),
    ] {
        let out = run(file, &env);
        assert_eq!(out.status.code(), Some(2), "{file:?} {env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{file:?}: {err}");
    }
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let op = "bop_shutdown_test_token_123456789";
    let mut server = Server::start(
        &dir.path().join("data"),
        &[],
        &[("BERTH_OPERATOR_TOKEN", op)],
    );
    let home = dir.path().join("home");
    let base = ["--url", server.url.as_str(), "--token", op, "--json"];
    let t: serde_json::Value = serde_json::from_str(&ok(&cli(
        &home,
        &[&["tenants", "create", "acme"][..], &base[..]].concat(),
        None,
    )))
    .unwrap();
    let k: serde_json::Value = serde_json::from_str(&ok(&cli(
        &home,
        &[
            &[
                "keys",
                "create",
                "--name",
                "a",
                "--role",
                "admin",
                "--tenant",
                t["id"].as_str().unwrap(),
            ][..],
            &base[..],
        ]
        .concat(),
        None,
    )))
    .unwrap();
    let key = k["key"].as_str().unwrap();

    // Start a request and leave its body half sent.
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut conn = TcpStream::connect(&addr).unwrap();
    let body = r#"{"value":"abc"}"#;
    write!(
        conn,
        "PUT /v1/secrets/SLOW HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..5]
    )
    .unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let kill = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(300));
    // The in-flight request is still served.
    conn.write_all(&body.as_bytes()[5..]).unwrap();
    let mut answer = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while !answer.contains("\r\n\r\n") {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    drop(conn);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        server.stderr().contains("stopped cleanly"),
        "{}",
        server.stderr()
    );
}

#[test]
fn demo_creates_a_tenant_and_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Server::start(&data, &["--demo"], &[]);
    let key = std::fs::read_to_string(data.join("demo-key")).unwrap();
    assert!(key.starts_with("bk_"));
    let err = first.stderr();
    assert!(err.contains(&key) && err.contains("curl -s"), "{err}");
    let me = ok(&cli(
        &dir.path().join("home"),
        &["me", "--url", &first.url, "--token", &key, "--json"],
        None,
    ));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&me).unwrap()["tenant"]["name"],
        "demo"
    );
    drop(first);
    let second = Server::start(&data, &["--demo"], &[]);
    assert!(
        second.stderr().contains(&key),
        "the same key is shown again"
    );
    assert_eq!(std::fs::read_to_string(data.join("demo-key")).unwrap(), key);
}

#[test]
fn validate_checks_a_manifest_offline() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let agent = dir.path().join("support");
    std::fs::create_dir(&agent).unwrap();
    std::fs::write(
        agent.join("agent.toml"),
        "name = \"support\"\n[model]\nname = \"mock/echo\"\n[tools]\nuse = [\"crm__*\"]\n",
    )
    .unwrap();
    let out = ok(&cli(&home, &["validate", agent.to_str().unwrap()], None));
    assert!(out.starts_with("ok: agent support"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(&cli(
        &home,
        &["validate", agent.to_str().unwrap(), "--json"],
        None,
    )))
    .unwrap();
    assert_eq!(json["model"]["name"], "mock/echo");
    std::fs::write(
        agent.join("agent.toml"),
        "name = \"support\"\n[model]\nname = \"mock/echo\"\n[limits]\nmax_steps = 0\n",
    )
    .unwrap();
    let err = fails(&cli(&home, &["validate", agent.to_str().unwrap()], None));
    assert!(err.contains("agent.toml:5: limits.max_steps"), "{err}");
}
