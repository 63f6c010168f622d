//! `toolbench`: the tool-call benchmark of `bench/tools`: an MCP tool call through Berth's
//! tenant endpoint `/mcp` (`bench__echo`: authentication, policy, data-loss rules on the
//! arguments and the result, per-tool rate limit, audit entry, Berth's pooled rmcp client)
//! against the same call (`echo`) made directly on the mock MCP server, with the same rmcp
//! client on both sides. Prints markdown tables.
//!
//! It serves the mock MCP server (2026-07-28, stateless) itself on 127.0.0.1, then, through
//! the operator token, makes a tenant (plan `--plan`) with an admin and an invoker key,
//! registers the mock as MCP server `bench` and, for each policy of `--policies`, puts that
//! policy and measures:
//!   - latency: `--calls` calls one at a time, direct and through Berth interleaved (so both
//!     see the same background load), after `--warmup` calls of each;
//!   - throughput: `--concurrency` callers (one rmcp client each) in closed loops for
//!     `--duration` seconds, directly, then through Berth.
//!
//! Every answer is compared with the expected one (the echo of the arguments, identical
//! directly and through Berth): a failed call or a different answer counts as an error and
//! is not timed. At the end the tenant's audit chain is verified and its entries counted.
//!
//! Policies: `full` (tools.allow, a per-tool rate limit far above the load, every built-in
//! data-loss detector on tool arguments and results with `redact`), `nodlp` (the same
//! without data-loss rules), `none` (an empty policy: no allow-list, no rate limit, no
//! data-loss rules; the audit entry of every call stays, it is not a policy matter).
//!
//! Usage: toolbench --berth URL --operator-token TOKEN [--calls N] [--warmup N]
//!                  [--duration SECS] [--concurrency C] [--policies full,nodlp,none]
//!                  [--payload-bytes B] [--plan NAME] [--mock-port PORT] [--label TEXT]
//!                  [--berth-pid PID]
//!
//! With `--berth-pid` (Berth on this machine) it also reports the CPU time Berth spent per
//! call through it (user + system, from `/proc/PID/stat`).

use berth_testkit::mock_mcp::{Revision, router};
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Client = RunningService<RoleClient, ()>;

struct Args {
    berth: String,
    operator_token: String,
    calls: usize,
    warmup: usize,
    duration: Duration,
    concurrency: usize,
    policies: Vec<String>,
    payload_bytes: usize,
    plan: String,
    mock_port: u16,
    label: String,
    berth_pid: Option<u32>,
}

fn parse_args() -> Result<Args, Error> {
    let mut a = Args {
        berth: String::new(),
        operator_token: String::new(),
        calls: 2000,
        warmup: 200,
        duration: Duration::from_secs(4),
        concurrency: 16,
        policies: vec!["full".to_owned()],
        payload_bytes: 256,
        plan: "pro".to_owned(),
        mock_port: 0,
        label: String::new(),
        berth_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--berth" => a.berth = val.trim_end_matches('/').to_owned(),
            "--operator-token" => a.operator_token = val,
            "--calls" => a.calls = val.parse()?,
            "--warmup" => a.warmup = val.parse()?,
            "--duration" => a.duration = Duration::from_secs_f64(val.parse()?),
            "--concurrency" => a.concurrency = val.parse::<usize>()?.max(1),
            "--policies" => {
                a.policies = val
                    .split([',', ' '])
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--payload-bytes" => a.payload_bytes = val.parse()?,
            "--plan" => a.plan = val,
            "--mock-port" => a.mock_port = val.parse()?,
            "--label" => a.label = val,
            "--berth-pid" => a.berth_pid = Some(val.parse()?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.berth.is_empty() || a.operator_token.is_empty() {
        return Err("--berth and --operator-token are required".into());
    }
    for p in &a.policies {
        policy(p)?;
    }
    Ok(a)
}

/// The policy document of a named variant.
fn policy(name: &str) -> Result<Value, Error> {
    let detectors = [
        "email",
        "phone",
        "credit_card",
        "iban",
        "us_ssn",
        "secret_token",
    ];
    Ok(match name {
        "full" => json!({
            "tools": {"allow": {"*": ["bench__*"]},
                      "rate_limits": [{"tool": "bench__*", "per_minute": 100_000_000}]},
            "dlp": {"detect": detectors, "on_tool_args": "redact", "on_tool_results": "redact",
                    "on_llm_output": "redact"},
        }),
        "nodlp" => json!({
            "tools": {"allow": {"*": ["bench__*"]},
                      "rate_limits": [{"tool": "bench__*", "per_minute": 100_000_000}]},
        }),
        "none" => json!({}),
        other => return Err(format!("unknown policy {other} (known: full, nodlp, none)").into()),
    })
}

/// Arguments of about `bytes` bytes of JSON with nothing a data-loss detector matches, so
/// that the answer through Berth must equal the direct one.
fn arguments(bytes: usize) -> Map<String, Value> {
    let words = "the quick brown fox jumps over the lazy dog while the benchmark counts ";
    let text: String = words
        .chars()
        .cycle()
        .take(bytes.saturating_sub(40))
        .collect();
    let mut m = Map::new();
    m.insert("text".into(), Value::String(text));
    m.insert("n".into(), json!(42));
    m.insert("ok".into(), json!(true));
    m
}

/// An rmcp Streamable HTTP client, as Berth's own upstream client is built, on the newest
/// revision (stateless, `server/discover`).
async fn connect(http: &reqwest::Client, url: &str, token: Option<&str>) -> Result<Client, Error> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(t) = token {
        config = config.auth_header(t.to_owned());
    }
    config.allow_stateless = true;
    let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    Ok(().serve_with_lifecycle(transport, lifecycle).await?)
}

/// One call; `Some(µs)` when it succeeded with the expected text.
async fn call(
    client: &Client,
    tool: &str,
    args: &Map<String, Value>,
    expected: &str,
) -> Option<u64> {
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args.clone());
    let started = Instant::now();
    let result = client.peer().call_tool(params).await.ok()?;
    let took = started.elapsed();
    if result.is_error == Some(true) {
        return None;
    }
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.as_str());
    (text == Some(expected)).then(|| u64::try_from(took.as_micros()).unwrap_or(u64::MAX))
}

async fn answer_text(
    client: &Client,
    tool: &str,
    args: &Map<String, Value>,
) -> Result<String, Error> {
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args.clone());
    let result = client.peer().call_tool(params).await?;
    let text: Vec<String> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    if result.is_error == Some(true) {
        return Err(format!("{tool} answered with a tool error: {}", text.join("\n")).into());
    }
    Ok(text.join("\n"))
}

#[derive(Default)]
struct Sample {
    us: Vec<u64>,
    errors: u64,
}

impl Sample {
    fn push(&mut self, r: Option<u64>) {
        match r {
            Some(us) => self.us.push(us),
            None => self.errors += 1,
        }
    }
    fn sorted(mut self) -> Sample {
        self.us.sort_unstable();
        self
    }
    fn pct(&self, p: f64) -> u64 {
        if self.us.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * (self.us.len() as f64 - 1.0)).round() as usize;
        self.us[i.min(self.us.len() - 1)]
    }
}

const PCTS: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 100.0];

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

/// `concurrency` closed loops on their own clients for `duration`: (calls/s, sample).
async fn throughput(
    clients: &[Arc<Client>],
    tool: &str,
    args: &Map<String, Value>,
    expected: &str,
    duration: Duration,
) -> (f64, Sample) {
    let started = Instant::now();
    let deadline = started + duration;
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, tool, args, expected) = (
                c.clone(),
                tool.to_owned(),
                args.clone(),
                expected.to_owned(),
            );
            let errors = errors.clone();
            tokio::spawn(async move {
                let mut us = Vec::new();
                while Instant::now() < deadline {
                    match call(&c, &tool, &args, &expected).await {
                        Some(t) => us.push(t),
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                us
            })
        })
        .collect();
    let mut all = Sample::default();
    for w in workers {
        match w.await {
            Ok(us) => all.us.extend(us),
            Err(_) => all.errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.errors += errors.load(Ordering::Relaxed);
    (all.us.len() as f64 / elapsed, all.sorted())
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: Option<u32>, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// µs of Berth CPU per call between two readings, as a table cell.
fn cpu_cell(before: Option<f64>, after: Option<f64>, calls: usize) -> String {
    match (before, after) {
        (Some(b), Some(a)) if calls > 0 => format!("{:.0}", (a - b) * 1e6 / calls as f64),
        _ => String::new(),
    }
}

/// A small JSON client for Berth's management API.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {text}").into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn str_field(v: &Value, k: &str) -> Result<String, Error> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no {k} in {v}").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let a = parse_args()?;

    // The mock MCP server, in this process.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.mock_port)).await?;
    let mock_url = format!("http://{}/mcp", listener.local_addr()?);
    let mock = tokio::spawn(async move { axum::serve(listener, router(Revision::Modern)).await });

    // A tenant, its keys, the server registration.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let api = Api {
        http: http.clone(),
        base: a.berth.clone(),
    };
    let post = reqwest::Method::POST;
    let name = format!("toolbench-{:08x}", rand::random::<u32>());
    let tenant = api
        .send(
            post.clone(),
            "/v1/tenants",
            &a.operator_token,
            Some(json!({"name": name, "plan": a.plan})),
        )
        .await?;
    let tenant = str_field(&tenant, "id")?;
    let key = |role: &str| {
        let (api, tenant, token) = (&api, &tenant, &a.operator_token);
        let body = json!({"name": format!("toolbench-{role}"), "role": role});
        async move {
            let k = api
                .send(
                    reqwest::Method::POST,
                    &format!("/v1/tenants/{tenant}/keys"),
                    token,
                    Some(body),
                )
                .await?;
            str_field(&k, "key")
        }
    };
    let admin = key("admin").await?;
    let invoker = key("invoker").await?;
    api.send(
        post.clone(),
        "/v1/mcp-servers",
        &admin,
        Some(json!({"name": "bench", "url": mock_url})),
    )
    .await?;

    let via_url = format!("{}/mcp", a.berth);
    let direct = connect(&http, &mock_url, None).await?;
    let via = connect(&http, &via_url, Some(&invoker)).await?;
    let args = arguments(a.payload_bytes);
    let payload = Value::Object(args.clone()).to_string().len();

    let mut latency_rows = Vec::new();
    let mut tput_rows = Vec::new();
    let mut verdicts = Vec::new();
    let mut via_calls = 0u64;
    let ticks = clock_ticks();
    for pname in &a.policies {
        api.send(
            reqwest::Method::PUT,
            "/v1/policy",
            &admin,
            Some(policy(pname)?),
        )
        .await?;
        // Sanity: the tool is offered, and both paths give the same answer.
        let listed = via.peer().list_all_tools().await?;
        if !listed.iter().any(|t| t.name == "bench__echo") {
            return Err(format!("policy {pname}: /mcp does not list bench__echo").into());
        }
        let expected = answer_text(&direct, "echo", &args).await?;
        let through = answer_text(&via, "bench__echo", &args).await?;
        via_calls += 1;
        if through != expected {
            return Err(format!(
                "policy {pname}: Berth answered {through:?}, the server {expected:?}"
            )
            .into());
        }
        eprintln!(
            "[toolbench] policy {pname}: warm-up ({} calls each), {} sequential calls each, then {}s x2 at {} callers",
            a.warmup,
            a.calls,
            a.duration.as_secs_f64(),
            a.concurrency
        );
        let (mut d, mut b) = (Sample::default(), Sample::default());
        for _ in 0..a.warmup {
            d.push(call(&direct, "echo", &args, &expected).await);
            b.push(call(&via, "bench__echo", &args, &expected).await);
        }
        via_calls += a.warmup as u64;
        let warm_errors = d.errors + b.errors;
        let (mut d, mut b) = (Sample::default(), Sample::default());
        let cpu_before = cpu_seconds(a.berth_pid, ticks);
        for i in 0..a.calls {
            // Alternate which goes first, so neither always follows the other.
            if i % 2 == 0 {
                d.push(call(&direct, "echo", &args, &expected).await);
                b.push(call(&via, "bench__echo", &args, &expected).await);
            } else {
                b.push(call(&via, "bench__echo", &args, &expected).await);
                d.push(call(&direct, "echo", &args, &expected).await);
            }
        }
        via_calls += a.calls as u64;
        let seq_cpu = cpu_cell(cpu_before, cpu_seconds(a.berth_pid, ticks), a.calls);
        let (d, b) = (d.sorted(), b.sorted());
        let cell = |s: &Sample| {
            PCTS.iter()
                .map(|p| ms(s.pct(*p) as f64))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let added = PCTS
            .iter()
            .map(|p| ms(b.pct(*p) as f64 - d.pct(*p) as f64))
            .collect::<Vec<_>>()
            .join(" | ");
        let ratio = PCTS
            .iter()
            .map(|p| format!("{:.2}", b.pct(*p) as f64 / (d.pct(*p).max(1)) as f64))
            .collect::<Vec<_>>()
            .join(" | ");
        latency_rows.push(format!(
            "| {pname} | direct (mock MCP server) | {} | {} | {} | |",
            d.us.len(),
            cell(&d),
            d.errors
        ));
        latency_rows.push(format!(
            "| {pname} | through Berth `/mcp` | {} | {} | {} | {seq_cpu} |",
            b.us.len(),
            cell(&b),
            b.errors
        ));
        latency_rows.push(format!(
            "| {pname} | **added (Berth − direct)** | | {added} | | |"
        ));
        latency_rows.push(format!(
            "| {pname} | ratio Berth / direct | | {ratio} | | |"
        ));
        let added99 = (b.pct(99.0) as f64 - d.pct(99.0) as f64) / 1000.0;
        let added50 = (b.pct(50.0) as f64 - d.pct(50.0) as f64) / 1000.0;
        verdicts.push(format!(
            "policy {pname}: added p50 {added50:.3} ms, added p99 {added99:.3} ms: target (added p99 < 2 ms) {}{}",
            if added99 < 2.0 { "met" } else { "missed" },
            if warm_errors > 0 { format!("; {warm_errors} errors during warm-up") } else { String::new() }
        ));

        // Throughput: one client per caller on each side.
        let mut dc = Vec::with_capacity(a.concurrency);
        let mut bc = Vec::with_capacity(a.concurrency);
        for _ in 0..a.concurrency {
            dc.push(Arc::new(connect(&http, &mock_url, None).await?));
            bc.push(Arc::new(connect(&http, &via_url, Some(&invoker)).await?));
        }
        let warm = Duration::from_secs_f64((a.duration.as_secs_f64() / 4.0).min(1.0));
        let (_, w) = throughput(&bc, "bench__echo", &args, &expected, warm).await;
        via_calls += w.us.len() as u64 + w.errors;
        let (drps, ds) = throughput(&dc, "echo", &args, &expected, a.duration).await;
        let cpu_before = cpu_seconds(a.berth_pid, ticks);
        let (brps, bs) = throughput(&bc, "bench__echo", &args, &expected, a.duration).await;
        let tput_cpu = cpu_cell(cpu_before, cpu_seconds(a.berth_pid, ticks), bs.us.len());
        via_calls += bs.us.len() as u64 + bs.errors;
        for (path, rps, s, cpu) in [
            ("direct (mock MCP server)", drps, &ds, String::new()),
            ("through Berth `/mcp`", brps, &bs, tput_cpu),
        ] {
            tput_rows.push(format!(
                "| {pname} | {path} | {rps:.0} | {} | {} | {} | {} | {cpu} |",
                ms(s.pct(50.0) as f64),
                ms(s.pct(99.0) as f64),
                ms(s.pct(99.9) as f64),
                s.errors
            ));
        }
        tput_rows.push(format!(
            "| {pname} | ratio Berth / direct | {:.2} | | | | | |",
            brps / drps.max(1e-9)
        ));
        for c in dc.into_iter().chain(bc) {
            if let Ok(c) = Arc::try_unwrap(c) {
                let _ = c.cancel().await;
            }
        }
    }
    let audit = api
        .send(reqwest::Method::GET, "/v1/audit/verify", &admin, None)
        .await?;
    let _ = direct.cancel().await;
    let _ = via.cancel().await;
    mock.abort();

    let label = if a.label.is_empty() {
        String::new()
    } else {
        format!(" ({})", a.label)
    };
    println!();
    println!(
        "Tool call latency{label}: `tools/call` of `echo` on the mock MCP server directly vs `bench__echo` through Berth's `/mcp`,"
    );
    println!(
        "one call at a time, the two interleaved; {} calls each after {} of warm-up; arguments {payload} bytes of JSON; rmcp client (2026-07-28, stateless) on both sides; ms",
        a.calls, a.warmup
    );
    println!();
    println!("| policy | path | ok | p50 | p90 | p99 | p99.9 | max | errors | Berth CPU µs/call |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &latency_rows {
        println!("{r}");
    }
    println!();
    println!(
        "Tool call throughput{label}: {} concurrent callers (one rmcp client each), closed loop, {}s per row; ms",
        a.concurrency,
        a.duration.as_secs_f64()
    );
    println!();
    println!("| policy | path | calls/s | p50 | p99 | p99.9 | errors | Berth CPU µs/call |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &tput_rows {
        println!("{r}");
    }
    println!();
    for v in &verdicts {
        println!("{v}");
    }
    // Verification stops at the first bad entry; `entries` counts the good ones before it.
    let ok = audit.get("ok").and_then(Value::as_bool).unwrap_or(false);
    println!(
        "Audit: {} tool calls made through Berth; `GET /v1/audit/verify`: {}.",
        via_calls,
        if ok {
            // Every call through Berth wrote one entry (written behind the call; the
            // verification reads after a flush), besides the tenant's set-up entries.
            let entries = audit.get("entries").and_then(Value::as_u64).unwrap_or(0);
            let short = if entries < via_calls {
                " (FEWER entries than calls: tool calls went unaudited)"
            } else {
                ""
            };
            format!("chain ok, {entries} entries{short}")
        } else {
            format!("chain NOT ok: {audit}")
        }
    );
    Ok(())
}
