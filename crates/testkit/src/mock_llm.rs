//! A mock LLM upstream speaking the OpenAI (`/v1/chat/completions`, `/v1/embeddings`) and
//! Anthropic (`/v1/messages`) wire formats, streamed or not, for tests and benchmarks.
//!
//! Behaviour is chosen by words in the requested model name, so one server serves every
//! case: `error-429`, `error-500`, `error-401`, `slow-<ms>`, `hang`, `drop` (the connection
//! dies mid-answer), `no-usage`, `garbage` (invalid JSON), `broken-sse`, `tools` (answers with
//! a call of the first tool offered, arguments `{"q":"mock"}`), `tools-args-<base64url JSON>`
//! (the call carries those arguments, and once the last message is the tool's result the
//! model answers `tool result: <result>`), `echo-key` (a successful answer whose text is the
//! credential the mock was sent; streamed in 5-char pieces, so the key is cut between
//! events), `huge` (a 200 answer of 64 MiB: one unending JSON body, or SSE events of 16 KiB
//! text each when streamed; any endpoint) and `huge-event` (streamed: one SSE line of 64
//! MiB). Any other model echoes the last user message.
//! Token counts are deterministic: ceil(characters / 4), at least 1.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the mock saw, for assertions.
#[derive(Default)]
pub struct Seen {
    pub requests: AtomicU64,
    pub last_authorization: Mutex<Option<String>>,
    pub last_api_key: Mutex<Option<String>>,
    pub last_body: Mutex<Option<Value>>,
}

#[derive(Clone)]
struct MockState {
    seen: Arc<Seen>,
    /// Added to every answer (and between stream chunks), for benchmarks.
    latency: Duration,
}

pub struct MockUpstream {
    /// Base URL including `/v1`, as providers are configured.
    pub url: String,
    pub seen: Arc<Seen>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        Self::start_with(Duration::ZERO, "127.0.0.1:0").await
    }

    pub async fn start_with(latency: Duration, addr: &str) -> MockUpstream {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind mock upstream");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let seen = Arc::new(Seen::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(MockState {
            seen: seen.clone(),
            latency,
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        MockUpstream {
            url,
            seen,
            shutdown: Some(tx),
        }
    }

    pub fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn router_for_bench(latency: Duration) -> Router {
    router(MockState {
        seen: Arc::new(Seen::default()),
        latency,
    })
}

fn router(state: MockState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/messages", post(anthropic_messages))
        .route("/v1/embeddings", post(embeddings))
        .with_state(state)
}

fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// The text of the last user message, in either format.
/// The arguments of the mock's tool call: decoded from `tools-args-<base64url JSON>`.
fn tool_arguments(model: &str) -> String {
    use base64::Engine;
    model
        .split_once("tools-args-")
        .and_then(|(_, b64)| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b64.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| "{\"q\":\"mock\"}".to_owned())
}

/// With `tools-args-`, the result the tool gave when it is the last message (both wires).
fn answered_tool_result(model: &str, messages: &Value) -> Option<String> {
    if !model.contains("tools-args-") {
        return None;
    }
    let last = messages.as_array()?.last()?;
    if last["role"] == "tool" {
        return Some(match &last["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    let block = last["content"]
        .as_array()?
        .iter()
        .find(|b| b["type"] == "tool_result")?;
    Some(match &block["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    })
}

fn last_user_text(messages: &Value) -> String {
    let Some(list) = messages.as_array() else {
        return String::new();
    };
    for m in list.iter().rev() {
        if m["role"] != "user" {
            continue;
        }
        return match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
    }
    String::new()
}

fn prompt_tokens(body: &Value) -> u64 {
    let mut t = tokens(&body["messages"].to_string());
    if let Some(system) = body.get("system") {
        t += tokens(&system.to_string());
    }
    t
}

/// Common front matter: record, delay, and the error behaviours. `None` means "answer".
async fn front(
    state: &MockState,
    headers: &HeaderMap,
    body: &Value,
    anthropic: bool,
) -> Option<Response> {
    state.seen.requests.fetch_add(1, Ordering::SeqCst);
    // Lossy: a key may hold any bytes a header can carry.
    let header_text = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    *state.seen.last_authorization.lock().expect("lock") = header_text(header::AUTHORIZATION);
    *state.seen.last_api_key.lock().expect("lock") =
        header_text(header::HeaderName::from_static("x-api-key"));
    *state.seen.last_body.lock().expect("lock") = Some(body.clone());
    let model = body["model"].as_str().unwrap_or("");
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    if let Some(ms) = model.split("slow-").nth(1).and_then(|r| {
        r.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u64>()
            .ok()
    }) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if model.contains("hang") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let error = |status: StatusCode, kind: &str, message: &str| {
        let body = if anthropic {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        } else {
            json!({"error": {"type": kind, "message": message, "code": kind}})
        };
        Some((status, axum::Json(body)).into_response())
    };
    if model.contains("error-429") {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "slow down",
        );
    }
    if model.contains("error-500") {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "upstream exploded",
        );
    }
    if model.contains("error-401") {
        // Real providers echo part of the key they were given; this mock echoes all of it,
        // so tests can prove the gateway never passes such a body on.
        let key = header_text(header::AUTHORIZATION)
            .or_else(|| header_text(header::HeaderName::from_static("x-api-key")));
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            &format!("invalid key {}", key.unwrap_or_default()),
        );
    }
    if model.contains("huge") {
        return Some(huge(body["stream"].as_bool().unwrap_or(false), model));
    }
    if model.contains("garbage") {
        return Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"id\": \"x\", this is not json",
            )
                .into_response(),
        );
    }
    None
}

/// Size of a `huge` answer.
const HUGE_BYTES: usize = 64 << 20;

/// A `huge` answer, produced as it is sent (the mock never holds it) and given up as soon
/// as the reader goes away.
fn huge(stream: bool, model: &str) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let (first, piece): (String, String) = if !stream {
        (
            "{\"id\": \"chatcmpl-huge\", \"content\": \"".to_owned(),
            "a".repeat(64 << 10),
        )
    } else if model.contains("huge-event") {
        ("data: ".to_owned(), "a".repeat(64 << 10))
    } else {
        let chunk = json!({"id": "chatcmpl-huge", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                           "choices": [{"index": 0, "delta": {"content": "a ".repeat(8 << 10)}, "finish_reason": null}]});
        (String::new(), format!("data: {chunk}\n\n"))
    };
    tokio::spawn(async move {
        let mut sent = first.len();
        if tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        let piece = Bytes::from(piece);
        while sent < HUGE_BYTES {
            sent += piece.len();
            if tx.send(Ok(piece.clone())).await.is_err() {
                return;
            }
        }
    });
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// With `echo-key`, the credential the request carried (without `Bearer `).
fn echoed_key(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .or_else(|| headers.get("x-api-key"))
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim_start_matches("Bearer ")
                .to_owned()
        })
        .unwrap_or_default()
}

/// Text cut into pieces of `n` chars.
fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

fn sse(frames: Vec<String>, latency: Duration, drop_after: Option<usize>) -> Response {
    let stream = async_stream(frames, latency, drop_after);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Frames as a body stream; with `drop_after`, the stream fails after that many frames,
/// which makes the server cut the connection without finishing the answer.
fn async_stream(
    frames: Vec<String>,
    latency: Duration,
    drop_after: Option<usize>,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for (i, f) in frames.into_iter().enumerate() {
            if drop_after == Some(i) {
                // Let the frames already sent reach the client before the cut.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx
                    .send(Err(std::io::Error::other(
                        "mock upstream drops the connection",
                    )))
                    .await;
                return;
            }
            if !latency.is_zero() && i > 0 {
                tokio::time::sleep(latency / 10).await;
            }
            if tx.send(Ok(Bytes::from(f))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        out.push(if i == 0 {
            w.to_owned()
        } else {
            format!(" {w}")
        });
    }
    out
}

async fn openai_chat(State(state): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "bad json", "type": "invalid_request_error"}})),
        )
            .into_response();
    };
    if let Some(r) = front(&state, &headers, &body, false).await {
        return r;
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false)
        && !model.contains("no-usage");
    let first_tool = body["tools"][0]["function"]["name"]
        .as_str()
        .map(str::to_owned);
    let answered = answered_tool_result(&model, &body["messages"]);
    let tool_call = model
        .contains("tools")
        .then_some(first_tool)
        .flatten()
        .filter(|_| answered.is_none());
    let arguments = tool_arguments(&model);
    let text = if tool_call.is_some() {
        String::new()
    } else if let Some(result) = answered {
        format!("tool result: {result}")
    } else if model.contains("echo-key") {
        format!("your key is {}", echoed_key(&headers))
    } else {
        format!("echo: {}", last_user_text(&body["messages"]))
    };
    let (pt, ct) = (
        prompt_tokens(&body),
        if tool_call.is_some() {
            10
        } else {
            tokens(&text)
        },
    );
    let usage = json!({"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct, "prompt_tokens_details": {"cached_tokens": 0}});
    let finish = if tool_call.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    if !stream {
        let mut message = json!({"role": "assistant", "content": if tool_call.is_some() { Value::Null } else { Value::String(text) }});
        if let Some(name) = &tool_call {
            message["tool_calls"] = json!([{"id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": arguments}}]);
        }
        let mut resp = json!({"id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]});
        if !model.contains("no-usage") {
            resp["usage"] = usage;
        }
        return axum::Json(resp).into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(name) = &tool_call {
        frames.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
        frames.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}),
            Value::Null,
        ));
    } else {
        let parts = if model.contains("echo-key") {
            pieces(&text, 5)
        } else {
            words(&text)
        };
        for w in parts {
            frames.push(chunk(json!({"content": w}), Value::Null));
        }
    }
    frames.push(chunk(json!({}), json!(finish)));
    if include_usage {
        frames.push(format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [], "usage": usage})
        ));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    if model.contains("broken-sse") {
        frames.insert(2, "data: {\"choices\": [not json\n\n".to_owned());
    }
    let drop_after = model.contains("drop").then_some(3);
    sse(frames, state.latency, drop_after)
}

async fn anthropic_messages(
    State(state): State<MockState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad json"}}))).into_response();
    };
    if let Some(r) = front(&state, &headers, &body, true).await {
        return r;
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let no_usage = model.contains("no-usage");
    let first_tool = body["tools"][0]["name"].as_str().map(str::to_owned);
    let answered = answered_tool_result(&model, &body["messages"]);
    let tool_call = model
        .contains("tools")
        .then_some(first_tool)
        .flatten()
        .filter(|_| answered.is_none());
    let arguments = tool_arguments(&model);
    let input: Value = serde_json::from_str(&arguments).unwrap_or_else(|_| json!({}));
    let text = if tool_call.is_some() {
        String::new()
    } else if let Some(result) = answered {
        format!("tool result: {result}")
    } else {
        format!("echo: {}", last_user_text(&body["messages"]))
    };
    let (pt, ct) = (
        prompt_tokens(&body),
        if tool_call.is_some() {
            10
        } else {
            tokens(&text)
        },
    );
    let stop = if tool_call.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    if !stream {
        let content = match &tool_call {
            Some(name) => {
                json!([{"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": input}])
            }
            None => json!([{"type": "text", "text": text}]),
        };
        let mut resp = json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": null});
        if !no_usage {
            resp["usage"] =
                json!({"input_tokens": pt, "output_tokens": ct, "cache_read_input_tokens": 0});
        }
        return axum::Json(resp).into_response();
    }
    let frame = |event: &str, data: Value| format!("event: {event}\ndata: {data}\n\n");
    let start_usage = if no_usage {
        json!({})
    } else {
        json!({"input_tokens": pt, "output_tokens": 1})
    };
    let mut frames = vec![frame(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
    )];
    match &tool_call {
        Some(name) => {
            frames.push(frame("content_block_start", json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}}})));
            frames.push(frame(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            ));
        }
        None => {
            frames.push(frame("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            frames.push(frame("ping", json!({"type": "ping"})));
            for w in words(&text) {
                frames.push(frame("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})));
            }
        }
    }
    frames.push(frame(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    // Anthropic reports output tokens cumulatively; the last message_delta holds the total.
    let delta_usage = if no_usage {
        json!({})
    } else {
        json!({"output_tokens": ct})
    };
    frames.push(frame("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": delta_usage})));
    frames.push(frame("message_stop", json!({"type": "message_stop"})));
    if model.contains("broken-sse") {
        frames.insert(
            2,
            "event: content_block_delta\ndata: {not json\n\n".to_owned(),
        );
    }
    let drop_after = model.contains("drop").then_some(3);
    sse(frames, state.latency, drop_after)
}

async fn embeddings(State(state): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    if let Some(r) = front(&state, &headers, &body, false).await {
        return r;
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        _ => vec![],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let seed = s
                .bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            let v: Vec<f64> = (0..8)
                .map(|k| ((seed >> (k * 4)) & 0xf) as f64 / 15.0)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    let pt: u64 = inputs.iter().map(|s| tokens(s)).sum();
    axum::Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": pt, "total_tokens": pt}})).into_response()
}
