//! The component host's benchmark (run by `bench/sandbox/component`, release build):
//! cold compile, load after a restart, warm start + run of a trivial component, fuel per
//! millisecond of CPU, and memory per concurrent instance. Prints markdown tables.
//!
//! `cargo run --release -p berth-component --example bench -- HOSTILE.wasm AGENT.wasm [PYTHON.wasm]`

use async_trait::async_trait;
use berth_component::{
    AgentHost, Engine, Grants, HostError, HttpError, HttpRequest, HttpResponse, Limits, LogLevel,
    Settings,
};
use berth_llm::{ChatRequest, ChatResponse, FinishReason, Message, Part, ToolDef};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers everything at once; `history` waits for a permit when `hold` is set.
#[derive(Default)]
struct BenchHost {
    hold: Option<Arc<tokio::sync::Semaphore>>,
}

#[async_trait]
impl AgentHost for BenchHost {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, HostError> {
        Ok(ChatResponse {
            id: "r".into(),
            model: request.model,
            content: vec![Part::Text("ok".into())],
            finish: FinishReason::Stop,
            usage: None,
        })
    }
    async fn list_tools(&self) -> Vec<ToolDef> {
        Vec::new()
    }
    async fn call_tool(&self, _name: &str, _arguments: &str) -> Result<String, HostError> {
        Ok("{}".into())
    }
    async fn kv_get(&self, _key: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(None)
    }
    async fn kv_set(&self, _key: &str, _value: Vec<u8>) -> Result<(), HostError> {
        Ok(())
    }
    async fn kv_delete(&self, _key: &str) -> Result<(), HostError> {
        Ok(())
    }
    async fn history(&self) -> Vec<Message> {
        if let Some(hold) = &self.hold
            && let Ok(permit) = hold.acquire().await
        {
            permit.forget();
        }
        Vec::new()
    }
    fn log(&self, _level: LogLevel, _message: &str) {}
    async fn http(&self, _request: HttpRequest) -> Result<HttpResponse, HttpError> {
        Err(HttpError::Denied("benchmark".into()))
    }
    fn config(&self, _key: &str) -> Option<String> {
        None
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(hostile_path), Some(agent_path)) = (args.get(1), args.get(2)) else {
        return Err("usage: bench HOSTILE.wasm AGENT.wasm".into());
    };
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let held: usize = std::env::var("HELD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let python = match args.get(3) {
        Some(p) => Some(std::fs::read(p)?),
        None => None,
    };
    let hostile = std::fs::read(hostile_path)?;
    let agent = std::fs::read(agent_path)?;
    let settings = Settings::default();
    let memory_mb = 64;
    let limits = Limits {
        memory_mb,
        cpu_ms: 2000,
        timeout: Duration::from_secs(30),
    };
    let grants = Grants {
        models: vec!["mock/echo".into()],
        ..Grants::default()
    };

    // Cold compile: a fresh engine with no code cache, five times, median.
    let mut compile = Vec::new();
    for (name, bytes) in [("hostile-agent", &hostile), ("rust-agent", &agent)] {
        let times = (0..5)
            .map(|_| {
                let engine = Engine::new(settings.clone())?;
                let t = Instant::now();
                engine.compile(bytes)?;
                Ok(t.elapsed())
            })
            .collect::<Result<Vec<_>, berth_component::ComponentError>>()?;
        compile.push((name, bytes.len(), median_ms(times)));
    }

    // Load after a restart: the artifact through wasmtime's code cache on disk.
    let cache = std::env::temp_dir().join(format!("berth-bench-cache-{}", std::process::id()));
    let cached = Settings {
        cache_dir: Some(cache.clone()),
        ..settings.clone()
    };
    let artifact = Engine::new(cached.clone())?.compile(&hostile)?;
    let restart = (0..5)
        .map(|_| {
            let engine = Engine::new(cached.clone())?;
            let t = Instant::now();
            engine.load(&artifact)?;
            Ok(t.elapsed())
        })
        .collect::<Result<Vec<_>, berth_component::ComponentError>>()?;
    let _ = std::fs::remove_dir_all(&cache);

    // Warm start + run: `echo:hi` on a loaded component, one run at a time.
    let engine = Engine::new(settings.clone())?;
    let loaded = engine.load(&engine.compile(&hostile)?)?;
    let host: Arc<dyn AgentHost> = Arc::new(BenchHost::default());
    for _ in 0..1000 {
        loaded
            .run("echo:hi", &limits, &grants, host.clone())
            .await?;
    }
    let mut warm = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = loaded
            .run("echo:hi", &limits, &grants, host.clone())
            .await?;
        warm.push(t.elapsed());
        debug_assert_eq!(out.output, "hi");
    }
    warm.sort();
    let full = engine.load(&engine.compile(&agent)?)?;
    let mut agent_runs = Vec::with_capacity(runs / 10);
    for _ in 0..runs / 10 {
        let t = Instant::now();
        full.run("hi", &limits, &grants, host.clone()).await?;
        agent_runs.push(t.elapsed());
    }
    agent_runs.sort();

    // Fuel per millisecond of CPU, for workloads of known size (median of 5 each).
    let spin = Limits {
        cpu_ms: 600_000,
        ..limits
    };
    let mut rates = Vec::new();
    for (name, input) in [
        ("tight loop (`spin`)", "spin:200000000"),
        ("sorting 2M integers (`sort`)", "sort:2000000"),
        ("string building and splitting (`text`)", "text:300000"),
    ] {
        let mut r = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let out = loaded.run(input, &spin, &grants, host.clone()).await?;
            r.push(out.fuel_used as f64 / (t.elapsed().as_secs_f64() * 1e3));
        }
        r.sort_by(f64::total_cmp);
        rates.push((name, r[r.len() / 2]));
    }

    // Memory per concurrent instance: `held` instances waiting in an import at once.
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let holding: Arc<dyn AgentHost> = Arc::new(BenchHost {
        hold: Some(hold.clone()),
    });
    let before = rss_kb();
    let tasks: Vec<_> = (0..held)
        .map(|_| {
            let (loaded, host, grants) = (loaded.clone(), holding.clone(), grants.clone());
            tokio::spawn(async move { loaded.run("hold", &limits, &grants, host).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_kb();
    hold.add_permits(held);
    for t in tasks {
        t.await??;
    }
    let per_instance_kb = (during.saturating_sub(before)) as f64 / held as f64;
    let echo_memory = loaded
        .run("echo:hi", &limits, &grants, host.clone())
        .await?
        .memory_bytes;
    let by_rss = (1024.0 * 1024.0 / per_instance_kb).floor();
    let by_limit = 1024 / memory_mb;

    // The Python agent (componentize-py), when given.
    let mut py_rows = Vec::new();
    if let Some(py) = &python {
        let engine = Engine::new(settings.clone())?;
        let t = Instant::now();
        let artifact = engine.compile(py)?;
        py_rows.push((
            format!("cold compile, python-agent ({} KB), ms", py.len() / 1024),
            format!("{:.0}", t.elapsed().as_secs_f64() * 1e3),
        ));
        let py_cache = std::env::temp_dir().join(format!("berth-bench-py-{}", std::process::id()));
        let cached = Settings {
            cache_dir: Some(py_cache.clone()),
            ..settings.clone()
        };
        Engine::new(cached.clone())?.compile(py)?;
        let t = Instant::now();
        Engine::new(cached)?.load(&artifact)?;
        py_rows.push((
            "load after restart from the code cache (python-agent), ms".to_owned(),
            format!("{:.1}", t.elapsed().as_secs_f64() * 1e3),
        ));
        let _ = std::fs::remove_dir_all(&py_cache);
        let loaded = engine.load(&artifact)?;
        let l = Limits {
            memory_mb: 256,
            ..limits
        };
        let peak = loaded
            .run("hi", &l, &grants, host.clone())
            .await?
            .memory_bytes;
        py_rows.push((
            "linear memory of one python-agent run, MB".to_owned(),
            format!("{:.1}", peak as f64 / 1048576.0),
        ));
        let mut smallest = None;
        for mb in [16, 32, 48, 64, 96, 128, 256] {
            let l = Limits {
                memory_mb: mb,
                ..limits
            };
            if loaded.run("hi", &l, &grants, host.clone()).await.is_ok() {
                smallest = Some(mb);
                break;
            }
        }
        let mut times = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            loaded.run("hi", &l, &grants, host.clone()).await?;
            times.push(t.elapsed());
        }
        times.sort();
        py_rows.push((
            "warm start + run, python-agent, p50 µs".to_owned(),
            format!("{:.0}", percentile(&times, 0.5)),
        ));
        py_rows.push((
            "warm start + run, python-agent, p99 µs".to_owned(),
            format!("{:.0}", percentile(&times, 0.99)),
        ));
        py_rows.push((
            "smallest `memory_mb` the python-agent runs in (of 16, 32, 48, 64, 96, 128, 256)"
                .to_owned(),
            smallest.map_or("none".to_owned(), |m| m.to_string()),
        ));
    }

    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| warm start + run, trivial component (`echo:hi`), p50 µs | {:.1} |",
        percentile(&warm, 0.50)
    );
    println!(
        "| warm start + run, trivial component, p99 µs | {:.1} |",
        percentile(&warm, 0.99)
    );
    println!(
        "| warm start + run, rust-agent (kv, history, tools, llm, log; no-op host), p50 µs | {:.1} |",
        percentile(&agent_runs, 0.50)
    );
    println!(
        "| warm start + run, rust-agent, p99 µs | {:.1} |",
        percentile(&agent_runs, 0.99)
    );
    for (name, size, ms) in &compile {
        println!(
            "| cold compile, {name} ({} KB), ms (median of 5) | {ms:.1} |",
            size / 1024
        );
    }
    println!(
        "| load after restart from wasmtime's code cache (hostile-agent), ms | {:.2} |",
        median_ms(restart)
    );
    println!(
        "| RSS per concurrent instance ({held} waiting in an import), KB | {per_instance_kb:.0} |"
    );
    println!(
        "| linear memory of one trivial run (reserved, mostly untouched), KB | {} |",
        echo_memory / 1024
    );
    println!("| concurrent instances per GiB, by measured RSS | {by_rss:.0} |");
    println!(
        "| concurrent instances per GiB, by the `memory_mb = {memory_mb}` limit (worst case) | {by_limit} |"
    );
    for (name, rate) in &rates {
        println!("| fuel per ms of CPU, {name} | {rate:.0} |");
    }
    for (name, value) in &py_rows {
        println!("| {name} | {value} |");
    }
    println!(
        "\n`Settings::fuel_per_ms` (the default) is {}.",
        settings.fuel_per_ms
    );
    println!(
        "\n{runs} warm runs, {} rust-agent runs, one at a time on a 1-worker tokio runtime.",
        runs / 10
    );
    Ok(())
}
