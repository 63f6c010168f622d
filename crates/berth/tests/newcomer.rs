//! The README's first command, as a newcomer runs it: the real binary in an empty directory,
//! no config file, no `--data-dir`, only `--listen`; then the `curl` line it prints, run as is.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_berth");

/// Kills the server when the test ends, whichever way it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_demo_in_an_empty_directory_prints_a_curl_line_that_works() {
    let dir = tempfile::tempdir().unwrap();
    // Only `--listen`, on port 0 so it is always free: everything else is the defaults.
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        // A fresh machine: no Berth variables, no login, nothing but a PATH and a HOME.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Child(cmd.spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();

    // Read what it prints until the curl line (or until it exits).
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = Vec::new();
    let curl = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                if line.trim_start().starts_with("curl ") {
                    break line.trim().to_owned();
                }
                printed.push(line);
            }
            Err(e) => panic!(
                "no curl line ({e}); the server printed:\n{}",
                printed.join("\n")
            ),
        }
    };
    assert!(
        printed.iter().any(|l| l.contains("Operator token")),
        "the operator token is announced: {printed:?}"
    );

    // The state went to ./.berth, made absolute (the component cache needs it so).
    assert!(dir.path().join(".berth/berth.db").exists());
    assert!(dir.path().join(".berth/master.key").exists());

    // Run the printed line exactly as a newcomer pastes it into a shell.
    let out = Command::new("sh")
        .arg("-c")
        .arg(&curl)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "curl failed: {out:?}");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(body["status"], "succeeded", "{body}");
    assert!(
        body["output"].as_str().is_some_and(|o| o.contains("hello")),
        "the demo agent echoes the input: {body}"
    );
}
