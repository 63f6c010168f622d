//! A component that misbehaves on request, for the host's limit tests and benchmark. The
//! input picks the behaviour: `echo:TEXT` answers TEXT (the trivial component of the
//! benchmark), `spin:N`, `sort:N` and `text:N` are workloads of known size (a tight loop,
//! sorting, string building and splitting) for the fuel calibration, `loop` never ends, `bomb` allocates until
//! it is stopped, `recurse` recurses without end, `panic` panics, `http:URL` tries an HTTP
//! GET and answers what the host said, `escape` looks for a way out of the sandbox
//! (environment, files, sockets), `hold` waits in an import (for concurrency), `fail`
//! returns its own error, `tool:NAME` and `model:NAME` call a tool or a model the manifest
//! may not allow, `kv-big` stores a value over the size cap.

use berth_sdk::{Agent, Error, http, kv, llm, thread, tools};
use std::hint::black_box;

struct Hostile;

impl Agent for Hostile {
    fn run(input: String) -> Result<String, Error> {
        let (mode, arg) = input.split_once(':').unwrap_or((input.as_str(), ""));
        match mode {
            "echo" => Ok(arg.to_owned()),
            "spin" => {
                let n: u64 = arg.parse().unwrap_or(0);
                let mut x = 0u64;
                for i in 0..n {
                    x = black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                Ok(x.to_string())
            }
            "sort" => {
                let n: usize = arg.parse().unwrap_or(0);
                let mut v: Vec<u64> = (0..n as u64)
                    .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7)
                    .collect();
                v.sort_unstable();
                Ok(black_box(v).len().to_string())
            }
            "text" => {
                let n: usize = arg.parse().unwrap_or(0);
                let mut total = 0usize;
                for i in 0..n {
                    let line = format!("{{\"id\":{i},\"name\":\"item-{i}\",\"ok\":true}}");
                    total += line
                        .split(',')
                        .map(|f| f.trim_matches('"').len())
                        .sum::<usize>();
                }
                Ok(black_box(total).to_string())
            }
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => Ok(recurse(black_box(1)).to_string()),
            "panic" => panic!("the hostile agent panics on purpose"),
            "fail" => Err(Error::new("refused", "the hostile agent refuses")),
            "http" => Ok(match http::send(&http::Request::get(arg)) {
                Ok(r) => format!("status {}", r.status),
                Err(http::HttpError::Denied(m)) => format!("denied: {m}"),
                Err(http::HttpError::Invalid(m)) => format!("invalid: {m}"),
                Err(http::HttpError::Failed(m)) => format!("failed: {m}"),
            }),
            "escape" => Ok(escape()),
            "tool" => Ok(match tools::call(arg, "{}") {
                Ok(r) => format!("tool ok: {r}"),
                Err(e) => format!("tool error: {}", e.code),
            }),
            "model" => {
                let mut request = llm::ChatRequest::new(vec![llm::Message::user("hi")]);
                request.model = Some(arg.to_owned());
                Ok(match llm::chat(&request) {
                    Ok(r) => format!("model ok: {}", r.model),
                    Err(e) => format!("model error: {}", e.code),
                })
            }
            "kv-big" => Ok(match kv::set("big", &vec![0u8; 2 << 20]) {
                Ok(()) => "kv ok".to_owned(),
                Err(e) => format!("kv error: {}", e.code),
            }),
            "hold" => Ok(format!("history {}", thread::history().len())),
            other => Err(Error::new("invalid", format!("unknown mode '{other}'"))),
        }
    }
}

fn recurse(n: u64) -> u64 {
    if n == u64::MAX {
        return 0;
    }
    // `black_box` on the result keeps this a real recursion (not a loop); the frames are
    // small, so the wasm stack overflows before the shadow stack in linear memory does.
    let below = recurse(black_box(n) + 1);
    black_box(below).wrapping_add(n)
}

/// Every way out the standard library offers, and what each gave.
fn escape() -> String {
    let env = std::env::vars().count();
    let root = std::fs::read_dir("/").map(|d| d.count()).ok();
    let passwd = std::fs::read("/etc/passwd").is_ok();
    let tcp = std::net::TcpStream::connect("127.0.0.1:9").is_ok();
    let dns = std::net::ToSocketAddrs::to_socket_addrs("localhost:80").is_ok();
    format!("env={env} root={root:?} passwd={passwd} tcp={tcp} dns={dns}")
}

berth_sdk::export_agent!(Hostile);
