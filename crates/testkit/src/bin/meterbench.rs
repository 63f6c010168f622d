//! `meterbench`: the metering benchmark of `bench/metering`: usage events ingested per
//! second through the batched recorder (the production path) and straight into the store,
//! budget reservations (reserve + settle) per second with their latency, and the in-memory
//! admission work a request does (rate-limit decision, concurrency slot, budget lookup),
//! on SQLite and PostgreSQL. Prints markdown tables.
//!
//! Usage: meterbench [--events N] [--reservations N]

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // a benchmark tool: failures stop it

use berth_core::clock::now_ms;
use berth_core::{Id, IdKind, Plan};
use berth_meter::UsageRecorder;
use berth_runtime::scheduler::{Scheduler, Share};
use berth_store::{BudgetLimit, Store, UsageEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn event(i: usize) -> UsageEvent {
    UsageEvent {
        id: Id::new(IdKind::Event).into_string(),
        at_ms: now_ms(),
        kind: "llm".to_owned(),
        key_id: Some("key_bench".to_owned()),
        agent: Some(format!("agent{}", i % 8)),
        provider: Some("mock".to_owned()),
        model: Some("mock/echo".to_owned()),
        input_tokens: 120,
        output_tokens: 40,
        cost_nano: 1234,
        latency_ms: 3,
        status: "ok".to_owned(),
        ..UsageEvent::default()
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

struct Row {
    backend: &'static str,
    recorder_eps: f64,
    direct_eps: f64,
    reserve_ops: f64,
    reserve_p50_us: f64,
    reserve_p99_us: f64,
}

async fn bench_store(
    backend: &'static str,
    store: Arc<dyn Store>,
    events: usize,
    reservations: usize,
) -> Row {
    let scope = berth_store::contract::new_tenant(
        store.as_ref(),
        &format!("bench-{}", rand::random::<u32>()),
    )
    .await;
    // Through the recorder: what a handler pays is `record` (a channel send); the batches
    // are written behind it. Timed until everything is stored (`flush`).
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let usage_store: Arc<dyn berth_store::UsageStore> = store.clone();
    let recorder = UsageRecorder::start(usage_store, &tasks, shutdown.clone());
    let batch: Vec<UsageEvent> = (0..events).map(event).collect();
    let started = Instant::now();
    for e in batch {
        recorder.record(&scope, e).await;
    }
    recorder.flush().await;
    let recorder_eps = events as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    // Straight into the store in batches of 1,000, as the recorder's writer does.
    let batch: Vec<UsageEvent> = (0..events).map(event).collect();
    let started = Instant::now();
    for chunk in batch.chunks(1000) {
        store.insert_usage(&scope, chunk).await.unwrap();
    }
    let direct_eps = events as f64 / started.elapsed().as_secs_f64();
    // Budget reservations: one reserve and one settle per call, sequentially.
    let limits = [BudgetLimit {
        budget: "tenant|bench".to_owned(),
        limit_nano: Some(i64::MAX / 4),
    }];
    let mut lat = Vec::with_capacity(reservations);
    let started = Instant::now();
    for i in 0..reservations {
        let t = Instant::now();
        let id = format!("hold{i}");
        store
            .reserve_budget(&scope, &id, &limits, 5000, 10, now_ms() + 60_000)
            .await
            .unwrap()
            .unwrap();
        store.settle_budget(&scope, &id, 1234, &[]).await.unwrap();
        lat.push(t.elapsed());
    }
    let reserve_ops = reservations as f64 / started.elapsed().as_secs_f64();
    lat.sort();
    Row {
        backend,
        recorder_eps,
        direct_eps,
        reserve_ops,
        reserve_p50_us: pct(&lat, 0.5),
        reserve_p99_us: pct(&lat, 0.99),
    }
}

/// ns per operation of `f`, over `n` runs.
fn ns_per(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        f(i);
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

#[tokio::main]
async fn main() {
    let mut events = 200_000usize;
    let mut reservations = 2_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => events = args.next().unwrap().parse().unwrap(),
            "--reservations" => reservations = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = berth_store::open(&url).await.unwrap();
    rows.push(bench_store("SQLite", sqlite, events, reservations).await);
    match berth_store::contract::pg_test_database().await {
        Some(db) => {
            let pg = berth_store::open(&db.url).await.unwrap();
            rows.push(bench_store("PostgreSQL", pg, events, reservations).await);
            db.drop_now().await;
        }
        None => eprintln!("PostgreSQL unreachable: its row is skipped"),
    }
    println!(
        "Usage events ({events} per row) and budget reservations ({reservations}, sequential):\n"
    );
    println!(
        "| backend | events/s via recorder (record → stored) | events/s straight to store | reserve+settle/s | reserve+settle p50 µs | p99 µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.backend,
            r.recorder_eps,
            r.direct_eps,
            r.reserve_ops,
            r.reserve_p50_us,
            r.reserve_p99_us
        );
    }

    // The in-memory admission work of one request, single thread.
    let limiter = berth_meter::MemoryLimiter::default();
    let keys: Vec<String> = (0..10_000).map(|i| format!("rpm:ten_{i}")).collect();
    let n = 2_000_000;
    let limiter_ns = ns_per(n, |i| {
        std::hint::black_box(limiter.check_now(
            &keys[i % keys.len()],
            1_000_000,
            Duration::from_secs(60),
            1,
        ));
    });
    let scheduler = Scheduler::<()>::new(1_000_000, 10);
    let share = Share {
        concurrency: 1_000_000,
        weight: 10,
    };
    let tenants: Vec<String> = (0..1000).map(|i| format!("ten_{i}")).collect();
    let slot_ns = ns_per(n / 4, |i| {
        let p = scheduler.admit(&tenants[i % tenants.len()], share).unwrap();
        drop(std::hint::black_box(p));
    });
    let plan = Plan {
        requests_per_minute: 60,
        tokens_per_minute: 1,
        concurrent_runs: 1,
        monthly_budget_usd: Some(5.0),
        weight: 1,
        markup_percent: 0.0,
    };
    let budgets_ns = ns_per(n / 4, |_| {
        std::hint::black_box(berth_meter::budget::applicable(
            &[],
            &plan,
            Some("support"),
            Some("key_1"),
            now_ms(),
        ));
    });
    println!("\nIn-memory admission work per request (one thread, {n} decisions):\n");
    println!("| step | ns per request |");
    println!("|---|---:|");
    println!("| rate-limit decision (GCRA, 10,000 keys) | {limiter_ns:.0} |");
    println!("| concurrency slot (admit + release, 1,000 tenants) | {slot_ns:.0} |");
    println!("| budgets in force (plan cap, no policy budgets) | {budgets_ns:.0} |");
    println!("| **total** | {:.0} |", limiter_ns + slot_ns + budgets_ns);
}
