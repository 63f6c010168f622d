//! Calls to HTTP providers (OpenAI, Anthropic, OpenAI-compatible): the key is added to the
//! outbound request only, and error bodies are scrubbed of it before they go anywhere.

use crate::error::GatewayError;
use crate::{Kind, Target};
use berth_llm::sse::SseParser;
use berth_llm::{ChatRequest, ChatResponse, StreamEvent, anthropic, openai};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

pub(crate) type EventRx = mpsc::Receiver<Result<StreamEvent, GatewayError>>;

const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Error bodies longer than this are cut: they are for people, not for parsing.
const MAX_ERROR_MESSAGE: usize = 500;

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

/// Removes the provider key (and anything shaped like a key) from upstream text.
pub(crate) fn scrub(text: &str, key: Option<&str>) -> String {
    let mut out = text.to_owned();
    if let Some(k) = key.filter(|k| k.len() >= 4) {
        out = out.replace(k, "[redacted]");
        // Providers often echo a key partially ("sk-abc...xyz"): drop its tail too.
        if k.len() > 8 {
            out = out.replace(&k[k.len() - 6..], "[redacted]");
            out = out.replace(&k[..8], "[redacted]");
        }
    }
    let masked: Vec<String> = out
        .split(' ')
        .map(|w| {
            let looks_like_key =
                (w.starts_with("sk-") || w.starts_with("sk_") || w.starts_with("key-"))
                    && w.len() > 12;
            if looks_like_key {
                "[redacted]".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    let mut out = masked.join(" ");
    if out.len() > MAX_ERROR_MESSAGE {
        let mut cut = MAX_ERROR_MESSAGE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
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
    let body = tokio::time::timeout(target.timeout, resp.bytes())
        .await
        .ok()
        .and_then(Result::ok)
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

/// Reads a whole answer body within the provider's timeout.
async fn read_body(resp: reqwest::Response, target: &Target) -> Result<bytes::Bytes, GatewayError> {
    tokio::time::timeout(target.timeout, resp.bytes())
        .await
        .map_err(|_| GatewayError::Timeout {
            provider: target.provider.clone(),
        })?
        .map_err(|e| GatewayError::Connect {
            provider: target.provider.clone(),
            message: scrub(&error_chain(&e), target.key.as_deref().map(|k| k.expose())),
        })
}

pub(crate) async fn chat(
    client: &reqwest::Client,
    target: &Target,
    req: &ChatRequest,
) -> Result<ChatResponse, GatewayError> {
    let mut req = req.clone();
    req.stream = false;
    let (path, body) = render(target, &req);
    let resp = send(request(client, target, path, &body), target).await?;
    let bytes = read_body(resp, target).await?;
    let invalid = |message: String| GatewayError::InvalidAnswer {
        provider: target.provider.clone(),
        message,
    };
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON ({e})")))?;
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
    tokio::spawn(async move {
        let mut bytes = resp.bytes_stream();
        let mut parser = SseParser::default();
        let mut anthropic_decoder = anthropic::StreamDecoder::default();
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
                Ok(None) => break,
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
            let events = match parser.feed(&chunk) {
                Ok(e) => e,
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
                        for item in list {
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
    body: &Value,
) -> Result<Value, GatewayError> {
    let mut body = body.clone();
    body["model"] = Value::String(target.model.clone());
    let resp = send(request(client, target, "embeddings", &body), target).await?;
    let bytes = read_body(resp, target).await?;
    serde_json::from_slice(&bytes).map_err(|e| GatewayError::InvalidAnswer {
        provider: target.provider.clone(),
        message: format!("not JSON ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_keys_whole_and_partial() {
        let key = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX";
        let out = scrub(
            &format!(
                "Incorrect API key provided: {key}. Also sk-proj-ABC...UVWX and sk-otherkey1234567"
            ),
            Some(key),
        );
        assert!(!out.contains("ABCDEFGHIJKL"), "{out}");
        assert!(!out.contains("QRSTUVWX"), "{out}");
        assert!(!out.contains("sk-otherkey"), "{out}");
        assert!(out.starts_with("Incorrect API key provided"));
        assert!(scrub(&"x".repeat(2000), None).chars().count() <= MAX_ERROR_MESSAGE + 1);
    }
}
