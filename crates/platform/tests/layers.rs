//! The layering rule, checked on the workspace's manifests: **only `api` knows HTTP; only
//! `berth` knows the config file and the command line.** A crate that depends on an HTTP
//! server framework, an OpenAPI generator, a command-line parser or the config file's
//! format, outside the crates allowed to, fails this test, and so does a crate that reaches
//! up the graph (the core depending on the HTTP crate).
//!
//! The check reads `cargo metadata --no-deps`: the direct, non-dev dependencies of each
//! workspace crate. Dev-dependencies are left out on purpose (a test may stand up a mock
//! HTTP upstream with axum: that is not the crate serving HTTP), and HTTP *clients*
//! (`reqwest`, rmcp's client) are allowed where a crate calls out: the gateway, the tools
//! registry, the egress guard, the platform (JWKS, budget webhooks, components' `http`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;

/// Serving HTTP, routing, extracting, documenting the API.
const HTTP_SERVER: &[&str] = &[
    "axum",
    "axum-core",
    "hyper",
    "hyper-util",
    "http-body",
    "http-body-util",
    "tower",
    "tower-http",
    "utoipa",
    "utoipa-axum",
];

/// Who may serve HTTP: the HTTP crate, and the test kit (mock LLM and MCP upstreams).
const HTTP_ALLOWED: &[&str] = &["berth-api", "berth-testkit"];

/// The command line and the config file's format.
const CLI_AND_CONFIG: &[&str] = &["clap", "toml", "config", "figment"];

/// Who may know them: the binary. Exception: `berth-core` parses `toml`, because the agent
/// manifest (`agent.toml`, a tenant's deploy artefact) is validated there; it never reads
/// the node's `berth.toml`.
fn cli_allowed(krate: &str, dep: &str) -> bool {
    krate == "berth" || (krate == "berth-core" && dep == "toml")
}

/// Crates of the top of the graph, which nothing below them may depend on.
const UPPER: &[(&str, &[&str])] = &[
    ("berth-platform", &["berth-api", "berth", "berth-testkit"]),
    ("berth-api", &["berth", "berth-testkit"]),
];

/// Each workspace crate's direct, non-dev dependencies.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata answers JSON");
    let mut crates = BTreeMap::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .map(|d| d["name"].as_str().expect("dependency name").to_owned())
            .collect();
        crates.insert(name, deps);
    }
    crates
}

#[test]
fn only_api_knows_http() {
    let crates = dependencies();
    assert!(crates.contains_key("berth-platform") && crates.contains_key("berth-api"));
    let mut breaches = Vec::new();
    for (krate, deps) in &crates {
        for dep in deps {
            if HTTP_SERVER.contains(&dep.as_str()) && !HTTP_ALLOWED.contains(&krate.as_str()) {
                breaches.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    assert!(
        breaches.is_empty(),
        "only berth-api may serve HTTP: {breaches:?}"
    );
}

#[test]
fn only_berth_knows_the_config_file_and_the_command_line() {
    let crates = dependencies();
    assert!(crates.contains_key("berth"));
    let mut breaches = Vec::new();
    for (krate, deps) in &crates {
        for dep in deps {
            if CLI_AND_CONFIG.contains(&dep.as_str()) && !cli_allowed(krate, dep) {
                breaches.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    assert!(
        breaches.is_empty(),
        "only berth may know the command line and the config file: {breaches:?}"
    );
}

#[test]
fn lower_crates_do_not_reach_up() {
    let crates = dependencies();
    let mut breaches = Vec::new();
    for (upper, allowed) in UPPER {
        for (krate, deps) in &crates {
            if krate != upper
                && deps.iter().any(|d| d == upper)
                && !allowed.contains(&krate.as_str())
            {
                breaches.push(format!("{krate} depends on {upper}"));
            }
        }
    }
    assert!(
        breaches.is_empty(),
        "the graph points down only: {breaches:?}"
    );
}
