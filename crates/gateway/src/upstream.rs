//! Calls to HTTP providers (OpenAI, Anthropic, OpenAI-compatible): the key is added to the
//! outbound request only, and everything that comes back, answers and errors, streamed or
//! not, is scrubbed of it before it goes anywhere. Every read of an answer is bounded
//! ([`BodyLimits`]): a provider (a tenant's own may be anyone) cannot make the gateway
//! buffer without end.

use crate::error::GatewayError;
use crate::scrub::{StreamScrub, scrub, scrub_value};
use crate::{Kind, Target};
use berth_llm::sse::SseParser;
use berth_llm::{ChatRequest, ChatResponse, LlmError, StreamEvent, anthropic, openai};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

pub(crate) type EventRx = mpsc::Receiver<Result<StreamEvent, GatewayError>>;

const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Of an error answer only this much is read: its message is for people, and is cut to
/// a few hundred bytes anyway.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How much of a provider's answers the gateway reads; beyond a limit the call fails with
/// `upstream_too_large` (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// A whole non-streamed answer (chat or embeddings).
    pub max_body_bytes: usize,
    /// One event of a streamed answer.
    pub max_event_bytes: usize,
    /// A whole streamed answer.
    pub max_stream_bytes: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_body_bytes: 32 << 20,
            max_event_bytes: berth_llm::sse::MAX_EVENT_BYTES,
            max_stream_bytes: 64 << 20,
        }
    }
}

fn too_large(target: &Target, limit: usize) -> GatewayError {
    GatewayError::TooLarge {
        provider: target.provider.clone(),
        limit_bytes: limit,
    }
}

fn request(
    client: &reqwest::Client,
    target: &Target,
    path: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    let url = format!("{}/{}", target.base_url.trim_end_matches('/'), path);
    let mut rb = client.post(url).json(body);
    if let Some(key) = &target.key {
        rb = match target.kind {
            Kind::Anthropic => {
                // Marked sensitive so that no debug output of the request shows it.
                let mut value = reqwest::header::HeaderValue::from_str(key.expose())
                    .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("invalid-key"));
                value.set_sensitive(true);
                rb.header("x-api-key", value)
                    .header("anthropic-version", ANTHROPIC_VERSION)
            }
            _ => rb.bearer_auth(key.expose()),
        };
    } else if target.kind == Kind::Anthropic {
        rb = rb.header("anthropic-version", ANTHROPIC_VERSION);
    }
    rb
}

fn render(target: &Target, req: &ChatRequest) -> (&'static str, Value) {
    let mut upstream_req = req.clone();
    upstream_req.model = target.model.clone();
    match target.kind {
        Kind::Anthropic => ("messages", anthropic::render_request(&upstream_req)),
        _ => ("chat/completions", openai::render_request(&upstream_req)),
    }
}

async fn send(
    rb: reqwest::RequestBuilder,
    target: &Target,
) -> Result<reqwest::Response, GatewayError> {
    let sent = tokio::time::timeout(target.timeout, rb.send()).await;
    let resp = match sent {
        Err(_) => {
            return Err(GatewayError::Timeout {
                provider: target.provider.clone(),
            });
        }
        Ok(Err(e)) if e.is_timeout() => {
            return Err(GatewayError::Timeout {
                provider: target.provider.clone(),
            });
        }
        Ok(Err(e)) => {
            // reqwest's error text can include the URL, never headers; still scrub it.
            let message = scrub(&error_chain(&e), target.key.as_deref().map(|k| k.expose()));
            return Err(GatewayError::Connect {
                provider: target.provider.clone(),
                message,
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let mut resp = resp;
    let body = tokio::time::timeout(target.timeout, read_capped(&mut resp, MAX_ERROR_BODY))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|(body, _cut)| body)
        .unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or_else(|| v["message"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(GatewayError::Upstream {
        provider: target.provider.clone(),
        status: status.as_u16(),
        message: scrub(&message, target.key.as_deref().map(|k| k.expose())),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads at most `limit` bytes of `resp`'s body; `true` when there was more.
async fn read_capped(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// Reads a whole answer body within the provider's timeout, refusing one larger than
/// `limit` (before reading, when its length is declared).
async fn read_body(
    mut resp: reqwest::Response,
    target: &Target,
    limit: usize,
) -> Result<Vec<u8>, GatewayError> {
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large(target, limit));
    }
    let (body, cut) = tokio::time::timeout(target.timeout, read_capped(&mut resp, limit))
        .await
        .map_err(|_| GatewayError::Timeout {
            provider: target.provider.clone(),
        })?
        .map_err(|e| GatewayError::Connect {
            provider: target.provider.clone(),
            message: scrub(&error_chain(&e), target.key.as_deref().map(|k| k.expose())),
        })?;
    if cut {
        return Err(too_large(target, limit));
    }
    Ok(body)
}

pub(crate) async fn chat(
    client: &reqwest::Client,
    target: &Target,
    req: &ChatRequest,
    limits: &BodyLimits,
) -> Result<ChatResponse, GatewayError> {
    let mut req = req.clone();
    req.stream = false;
    let (path, body) = render(target, &req);
    let resp = send(request(client, target, path, &body), target).await?;
    let bytes = read_body(resp, target, limits.max_body_bytes).await?;
    let invalid = |message: String| GatewayError::InvalidAnswer {
        provider: target.provider.clone(),
        message,
    };
    let mut value: Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON ({e})")))?;
    drop(bytes);
    // A provider may echo the key it was given in a successful answer too.
    scrub_value(&mut value, target.key.as_deref().map(|k| k.expose()));
    let parsed = match target.kind {
        Kind::Anthropic => anthropic::parse_response(&value),
        _ => openai::parse_response(&value),
    };
    parsed.map_err(|e| {
        invalid(scrub(
            &e.to_string(),
            target.key.as_deref().map(|k| k.expose()),
        ))
    })
}

/// Opens a stream. Events flow through a channel from a reader task, so a client that goes
/// away drops the receiver, the reader stops, and the upstream connection closes.
pub(crate) async fn stream(
    client: &reqwest::Client,
    target: &Target,
    req: &ChatRequest,
    limits: &BodyLimits,
) -> Result<EventRx, GatewayError> {
    let mut req = req.clone();
    req.stream = true;
    let (path, body) = render(target, &req);
    let resp = send(request(client, target, path, &body), target).await?;
    let (tx, rx) = mpsc::channel(64);
    let provider = target.provider.clone();
    let kind = target.kind;
    let idle = target.timeout;
    let key = target.key.clone();
    let limits = *limits;
    let oversize = too_large(target, limits.max_stream_bytes);
    let event_oversize = too_large(target, limits.max_event_bytes);
    tokio::spawn(async move {
        let mut bytes = resp.bytes_stream();
        let mut parser = SseParser::with_limit(limits.max_event_bytes);
        let mut anthropic_decoder = anthropic::StreamDecoder::default();
        let mut scrubber = StreamScrub::new(key.as_deref().map(|k| k.expose()));
        let mut total: usize = 0;
        let broken = |message: String| GatewayError::InvalidAnswer {
            provider: provider.clone(),
            message,
        };
        loop {
            let chunk = match tokio::time::timeout(idle, bytes.next()).await {
                Err(_) => {
                    let _ = tx
                        .send(Err(GatewayError::Timeout {
                            provider: provider.clone(),
                        }))
                        .await;
                    return;
                }
                Ok(None) => {
                    for item in scrubber.finish() {
                        if tx.send(Ok(item)).await.is_err() {
                            return;
                        }
                    }
                    break;
                }
                Ok(Some(Err(e))) => {
                    let message = scrub(&error_chain(&e), key.as_deref().map(|k| k.expose()));
                    let _ = tx
                        .send(Err(GatewayError::Connect {
                            provider: provider.clone(),
                            message,
                        }))
                        .await;
                    return;
                }
                Ok(Some(Ok(c))) => c,
            };
            total = total.saturating_add(chunk.len());
            if total > limits.max_stream_bytes {
                let _ = tx.send(Err(oversize)).await;
                return;
            }
            let events = match parser.feed(&chunk) {
                Ok(e) => e,
                Err(LlmError::EventTooLarge(_)) => {
                    let _ = tx.send(Err(event_oversize)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(broken(e.to_string()))).await;
                    return;
                }
            };
            for ev in events {
                let decoded = match kind {
                    Kind::Anthropic => anthropic_decoder.decode(&ev.event, &ev.data),
                    _ => openai::decode_chunk(&ev.data),
                };
                match decoded {
                    Ok(list) => {
                        for item in list.into_iter().flat_map(|e| scrubber.push(e)) {
                            if tx.send(Ok(item)).await.is_err() {
                                return; // the client is gone
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(broken(scrub(
                                &e.to_string(),
                                key.as_deref().map(|k| k.expose()),
                            ))))
                            .await;
                        return;
                    }
                }
            }
        }
    });
    Ok(rx)
}

pub(crate) async fn embeddings(
    client: &reqwest::Client,
    target: &Target,
    mut body: Value,
    limits: &BodyLimits,
) -> Result<Value, GatewayError> {
    body["model"] = Value::String(target.model.clone());
    let resp = send(request(client, target, "embeddings", &body), target).await?;
    drop(body);
    let bytes = read_body(resp, target, limits.max_body_bytes).await?;
    let mut value: Value =
        serde_json::from_slice(&bytes).map_err(|e| GatewayError::InvalidAnswer {
            provider: target.provider.clone(),
            message: format!("not JSON ({e})"),
        })?;
    scrub_value(&mut value, target.key.as_deref().map(|k| k.expose()));
    Ok(value)
}
