//! Measures `sandbox__exec` against a plain process spawn of the same command, one call at
//! a time, and prints a markdown table (used by `bench/sandbox/run`).
//!
//! `sandbox-bench [CALLS] [HELPER]`: CALLS per row (default 200); HELPER defaults to the
//! `berth-sandbox-helper` binary next to this one.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // a benchmark tool

use berth_sandbox::{HELPER_ARG, Language, Sandbox, SandboxSettings};
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.50), percentile(&ms, 0.99))
}

async fn plain(program: &str, args: &[&str]) -> f64 {
    let start = Instant::now();
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("plain spawn");
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    start.elapsed().as_secs_f64() * 1000.0
}

/// The call's wall time, and the container's own (the helper's `duration_ms`).
async fn sandboxed(sandbox: &Sandbox, language: Language, code: &str) -> (f64, f64) {
    let start = Instant::now();
    let r = sandbox
        .run(language, code, Duration::from_secs(10))
        .await
        .expect("the sandbox runs");
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    (start.elapsed().as_secs_f64() * 1000.0, r.duration_ms as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().map_or(200, |n| n.parse().expect("CALLS"));
    let helper = args.next().map_or_else(
        || {
            let exe = std::env::current_exe().expect("current exe");
            exe.with_file_name("berth-sandbox-helper")
        },
        std::path::PathBuf::from,
    );
    let sandbox = Sandbox::new(SandboxSettings {
        helper: vec![helper.into_os_string(), HELPER_ARG.into()],
        ..SandboxSettings::default()
    });
    let python = sandbox.settings().python.clone();
    let sh = sandbox.settings().sh.clone();
    let cases: [(&str, Language, &str, &str, Vec<&str>); 2] = [
        ("`true` (sh)", Language::Sh, "true", &sh, vec!["-c", "true"]),
        (
            "`python3 -c 'print(1)'`",
            Language::Python,
            "print(1)",
            &python,
            vec!["-c", "print(1)"],
        ),
    ];
    println!(
        "| command | calls | plain p50 ms | plain p99 ms | sandbox p50 ms | sandbox p99 ms | added p50 ms | ratio p50 | ratio p99 | container p50 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, language, code, program, plain_args) in &cases {
        // Warm both paths (page cache, interpreter files) before measuring.
        for _ in 0..5 {
            plain(program, plain_args).await;
            sandboxed(&sandbox, *language, code).await;
        }
        let mut p = Vec::with_capacity(calls);
        let mut s = Vec::with_capacity(calls);
        let mut inside = Vec::with_capacity(calls);
        // Interleaved, so that both see the same background load.
        for _ in 0..calls {
            p.push(plain(program, plain_args).await);
            let (total, container) = sandboxed(&sandbox, *language, code).await;
            s.push(total);
            inside.push(container);
        }
        let (p50, p99) = stats(p);
        let (s50, s99) = stats(s);
        let (c50, _) = stats(inside);
        println!(
            "| {label} | {calls} | {p50:.2} | {p99:.2} | {s50:.2} | {s99:.2} | {:.2} | {:.2} | {:.2} | {c50:.0} |",
            s50 - p50,
            s50 / p50,
            s99 / p99
        );
    }
}
