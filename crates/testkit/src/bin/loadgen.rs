//! `loadgen`: an open-loop HTTP load generator for the benchmarks under `bench/`.
//!
//! With `--rate R` it starts a request every 1/R seconds whatever the answers do, and
//! measures each latency from the request's *scheduled* start, so a slow server cannot hide
//! its queueing (no coordinated omission). With `--rate 0` it runs `--concurrency` closed
//! loops as fast as the server answers (a throughput test). Prints one JSON line.
//!
//! Usage: loadgen --url URL [--rate R] [--duration SECS] [--concurrency N]
//!                [--header 'Name: value']... [--body JSON] [--stream]

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // a benchmark tool: bad arguments stop it

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

struct Args {
    url: String,
    rate: f64,
    duration: Duration,
    concurrency: usize,
    headers: Vec<(String, String)>,
    body: Option<String>,
    stream: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: String::new(),
        rate: 0.0,
        duration: Duration::from_secs(10),
        concurrency: 32,
        headers: vec![],
        body: None,
        stream: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--url" => a.url = val(),
            "--rate" => a.rate = val().parse().expect("rate"),
            "--duration" => a.duration = Duration::from_secs_f64(val().parse().expect("duration")),
            "--concurrency" => a.concurrency = val().parse().expect("concurrency"),
            "--header" => {
                let h = val();
                let (k, v) = h.split_once(':').expect("header is 'Name: value'");
                a.headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "--body" => a.body = Some(val()),
            "--stream" => a.stream = true,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.url.is_empty(), "--url is required");
    a
}

#[derive(Default)]
struct Results {
    /// Microseconds: to the full answer, and (streams) to the first body byte.
    total: Vec<u64>,
    first_byte: Vec<u64>,
    errors: u64,
}

async fn one(client: &reqwest::Client, a: &Args, scheduled: Instant, res: &Mutex<Results>) {
    let mut req = if a.body.is_some() {
        client.post(&a.url)
    } else {
        client.get(&a.url)
    };
    for (k, v) in &a.headers {
        req = req.header(k, v);
    }
    if let Some(b) = &a.body {
        req = req
            .header("content-type", "application/json")
            .body(b.clone());
    }
    let outcome = async {
        let mut resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let mut first = None;
        while let Some(chunk) = resp.chunk().await.ok()? {
            if first.is_none() && !chunk.is_empty() {
                first = Some(scheduled.elapsed());
            }
        }
        Some((first, scheduled.elapsed()))
    }
    .await;
    let mut r = res.lock().await;
    match outcome {
        Some((first, total)) => {
            r.total.push(total.as_micros() as u64);
            if let Some(f) = first {
                r.first_byte.push(f.as_micros() as u64);
            }
        }
        None => r.errors += 1,
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let a = Arc::new(parse_args());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client");
    let res = Arc::new(Mutex::new(Results::default()));
    let started = Instant::now();
    if a.rate > 0.0 {
        let interval = Duration::from_secs_f64(1.0 / a.rate);
        let total = (a.duration.as_secs_f64() * a.rate) as u64;
        let mut handles = Vec::with_capacity(total as usize);
        for i in 0..total {
            let scheduled = started + interval.mul_f64(i as f64);
            tokio::time::sleep_until(scheduled.into()).await;
            let (c, a, r) = (client.clone(), a.clone(), res.clone());
            handles.push(tokio::spawn(
                async move { one(&c, &a, scheduled, &r).await },
            ));
        }
        for h in handles {
            let _ = h.await;
        }
    } else {
        let deadline = started + a.duration;
        let workers: Vec<_> = (0..a.concurrency)
            .map(|_| {
                let (c, a, r) = (client.clone(), a.clone(), res.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        one(&c, &a, Instant::now(), &r).await;
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut r = res.lock().await;
    r.total.sort_unstable();
    r.first_byte.sort_unstable();
    let ok = r.total.len();
    println!(
        "{{\"ok\": {ok}, \"errors\": {}, \"rps\": {:.1}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}, \"ttfb_p50_us\": {}, \"ttfb_p99_us\": {}}}",
        r.errors,
        ok as f64 / elapsed,
        pct(&r.total, 50.0),
        pct(&r.total, 90.0),
        pct(&r.total, 99.0),
        pct(&r.total, 99.9),
        r.total.last().copied().unwrap_or(0),
        pct(&r.first_byte, 50.0),
        pct(&r.first_byte, 99.0),
    );
}
