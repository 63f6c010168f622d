//! Gateway answers rendered in the client's wire (OpenAI or Anthropic): a whole answer as
//! JSON, a streamed one as server-sent events, each with the `x-berth-*` and
//! `x-ratelimit-*` headers. What is said comes from `berth_platform::llm`; how it is
//! framed is decided here.

use crate::error::insert_rate_headers;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::NanoUsd;
use berth_llm::{StreamEvent, anthropic, openai};
use berth_platform::llm::{Attribution, Embedded, Streamed, Whole, Wire};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// What the caller claims in `Berth-Agent` and `Berth-Tags`: each header's text, trimmed,
/// `None` when absent, empty or not text.
pub fn attribution(headers: &HeaderMap) -> Attribution<'_> {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    Attribution {
        agent: header_text("berth-agent"),
        tags: header_text("berth-tags"),
    }
}

fn cost_header(cost: NanoUsd) -> HeaderValue {
    HeaderValue::from_str(&format!("{:.9}", cost.as_usd())).unwrap_or(HeaderValue::from_static("0"))
}

fn provider_header(provider: &str) -> HeaderValue {
    HeaderValue::from_str(provider).unwrap_or(HeaderValue::from_static("unknown"))
}

fn now_secs() -> i64 {
    berth_core::clock::now_ms() / 1000
}

/// A whole chat answer in the client's wire, with its provider, cost and limits.
pub fn whole(answer: Whole, wire: Wire) -> Response {
    let body = match wire {
        Wire::OpenAi => openai::render_response(&answer.response, now_secs()),
        Wire::Anthropic => anthropic::render_response(&answer.response),
    };
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    h.insert("x-berth-provider", provider_header(&answer.provider));
    h.insert("x-berth-cost-usd", cost_header(answer.cost));
    insert_rate_headers(resp.headers_mut(), &answer.rate);
    resp
}

/// An embeddings answer as the provider gave it, with its provider, cost and limits.
pub fn embedded(answer: Embedded) -> Response {
    let mut resp = axum::Json(answer.body).into_response();
    resp.headers_mut()
        .insert("x-berth-provider", provider_header(&answer.provider));
    resp.headers_mut()
        .insert("x-berth-cost-usd", cost_header(answer.cost));
    insert_rate_headers(resp.headers_mut(), &answer.rate);
    resp
}

/// `GET /v1/models` in the OpenAI list shape.
pub fn models(ids: &[String]) -> Value {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            let owner = id.split_once('/').map_or("alias", |(p, _)| p);
            json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
        })
        .collect();
    json!({"object": "list", "data": data})
}

enum Enc {
    OpenAi(openai::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
}

impl Enc {
    fn encode(&mut self, events: &[StreamEvent]) -> Vec<String> {
        events
            .iter()
            .flat_map(|event| match self {
                Enc::OpenAi(e) => e.encode(event),
                Enc::Anthropic(e) => e.encode(event),
            })
            .collect()
    }

    /// An in-band error frame (the status line went out with the first byte): an
    /// upstream failure, or an answer the data-loss rules withheld (`blocked`).
    fn error(&self, blocked: bool, code: &str, message: &str) -> String {
        let kind = match (self, blocked) {
            (_, true) => "invalid_request_error",
            (Enc::OpenAi(_), false) => "upstream",
            (Enc::Anthropic(_), false) => "api_error",
        };
        match self {
            Enc::OpenAi(_) => format!(
                "data: {}\n\n",
                json!({"error": {"type": kind, "code": code, "message": message}})
            ),
            Enc::Anthropic(_) => format!(
                "event: error\ndata: {}\n\n",
                json!({"type": "error", "error": {"type": kind, "code": code, "message": message}})
            ),
        }
    }
}

/// The SSE answer. The gateway's stream meters itself; this re-encodes events for the
/// client's wire, passes text through the platform's data-loss screen, settles the call's
/// reservation at the end, and reports an upstream failure or a blocked answer in-band
/// (headers are already sent).
pub fn streamed(answer: Streamed, wire: Wire) -> Response {
    let Streamed {
        provider,
        model,
        stream,
        input_estimate,
        include_usage,
        settlement,
        screen,
        rate,
    } = answer;
    let id = format!(
        "chatcmpl-{}",
        berth_core::Id::new(berth_core::IdKind::Request)
            .as_str()
            .trim_start_matches("req_")
    );
    let encoder = match wire {
        Wire::OpenAi => Enc::OpenAi(openai::StreamEncoder::new(
            id.clone(),
            model.clone(),
            now_secs(),
            include_usage,
        )),
        Wire::Anthropic => Enc::Anthropic(anthropic::StreamEncoder::new(
            id.replace("chatcmpl-", "msg_"),
            model.clone(),
            input_estimate,
        )),
    };
    let body = futures_util::stream::unfold(
        (stream, encoder, settlement, screen, false),
        move |(mut stream, mut enc, mut settlement, mut screen, done)| async move {
            if done {
                return None;
            }
            let next = stream.next().await;
            let ended = next.is_none();
            let events = match (next, &mut screen) {
                (Some(Ok(event)), None) => Ok(vec![event]),
                (Some(Ok(event)), Some(s)) => s.events(Some(event)),
                (None, Some(s)) => s.events(None),
                (None, None) => Ok(Vec::new()),
                (Some(Err(err)), _) => {
                    settlement.settle(stream.usage().0.total()).await;
                    if let Some(s) = &screen {
                        s.audit(None).await;
                    }
                    let frame = enc.error(false, err.code(), &err.to_string());
                    return Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(frame)),
                        (stream, enc, settlement, screen, true),
                    ));
                }
            };
            let mut frames = match events {
                Ok(events) => enc.encode(&events),
                Err(detectors) => {
                    // Nothing of the blocked text was sent: it was still held.
                    settlement.settle(stream.usage().0.total()).await;
                    if let Some(s) = &screen {
                        s.audit(Some(detectors)).await;
                    }
                    let frame = enc.error(
                        true,
                        "dlp_blocked",
                        "the model's answer was withheld by the data-loss rules",
                    );
                    return Some((
                        Ok(bytes::Bytes::from(frame)),
                        (stream, enc, settlement, screen, true),
                    ));
                }
            };
            if ended {
                let cost = stream.cost();
                let (usage, _) = stream.usage();
                settlement.settle(usage.total()).await;
                if let Some(s) = &screen {
                    s.audit(None).await;
                }
                match &mut enc {
                    Enc::OpenAi(e) => {
                        e.encode(&StreamEvent::Usage { usage });
                        frames
                            .extend(e.finish(Some(("berth", json!({"cost_usd": cost.as_usd()})))));
                    }
                    Enc::Anthropic(e) => {
                        e.encode(&StreamEvent::Usage { usage });
                        frames.extend(e.finish());
                    }
                }
            }
            Some((
                Ok(bytes::Bytes::from(frames.concat())),
                (stream, enc, settlement, screen, ended),
            ))
        },
    );
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-berth-provider", provider_header(&provider));
    *resp.status_mut() = StatusCode::OK;
    insert_rate_headers(resp.headers_mut(), &rate);
    resp
}
