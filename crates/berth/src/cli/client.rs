//! The one HTTP client behind every client command: where to connect, with what token,
//! how paths are built, how lists are paged through, and how a server error becomes a
//! message and a non-zero exit.

use berth_llm::sse::{SseEvent, SseParser};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    /// The server's own error message, with its status and code.
    #[error("{message} (HTTP {status}, {code})")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// The request succeeded but what it reports did not: a run that failed or was
    /// cancelled, an audit chain that does not verify.
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What `berth login` saves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedLogin {
    pub url: String,
    pub token: String,
}

/// `$XDG_CONFIG_HOME/berth/login.toml`, else `~/.config/berth/login.toml`.
pub fn login_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("berth").join("login.toml"))
}

pub fn save_login(login: &SavedLogin) -> Result<PathBuf, ClientError> {
    let path = login_path()
        .ok_or_else(|| ClientError::Usage("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = toml::to_string(login).map_err(|e| ClientError::Decode(e.to_string()))?;
    let _ = std::fs::remove_file(&path);
    let mut f = berth_vault::create_private_file(&path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    Ok(path)
}

fn load_login() -> Option<SavedLogin> {
    let text = std::fs::read_to_string(login_path()?).ok()?;
    toml::from_str(&text).ok()
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// Flags (or `BERTH_URL`/`BERTH_TOKEN`, which clap folds into them) win over the
    /// saved login.
    pub fn resolve(url: Option<String>, token: Option<String>) -> Result<Self, ClientError> {
        let saved = load_login();
        let norm = |u: &str| u.trim_end_matches('/').to_owned();
        let base = url
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.url.clone()))
            .unwrap_or_else(|| "http://127.0.0.1:7700".to_owned());
        // The saved token belongs to the saved server: it is never sent to another URL.
        let saved_token = saved
            .filter(|s| url.as_deref().is_none_or(|u| norm(u) == norm(&s.url)))
            .map(|s| s.token);
        let token = token.or(saved_token).ok_or_else(|| {
            ClientError::Usage(
                "no token for this server: pass --token, set BERTH_TOKEN, or run 'berth login'"
                    .into(),
            )
        })?;
        Ok(Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Uploads raw bytes (a bundle) with `content_type`.
    pub async fn upload(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Value, ClientError> {
        let req = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body);
        self.finish(req).await
    }

    /// Sends a request and returns the decoded JSON answer (`null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.finish(req).await
    }

    /// A GET answered as text of the `accept`ed type (an invoice as CSV); errors as JSON.
    pub async fn get_text(&self, path: &str, accept: &str) -> Result<String, ClientError> {
        let url = format!("{}{}", self.base, path);
        let req = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .header("accept", accept);
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            return Err(Self::read(resp).await.err().unwrap_or(ClientError::Decode(
                "the server refused without saying why".into(),
            )));
        }
        resp.text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Fetches every page of a list endpoint into one `{"data": [...]}` answer.
    pub async fn list_all(&self, path: &str) -> Result<Value, ClientError> {
        let mut data = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=500&cursor={}", seg(c)),
                None => format!("{path}{sep}limit=500"),
            };
            let page = self.call(Method::GET, &url, None).await?;
            if let Some(items) = page["data"].as_array() {
                data.extend(items.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(json!({"data": data, "next_cursor": null})),
            }
        }
    }

    /// Like [`Client::call`], but asks for an event stream (`Accept: text/event-stream`).
    /// A server may still answer with JSON (a finished run), which is returned as such.
    pub async fn open_events(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Streamed, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .header("accept", "text/event-stream");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req).await?;
        let is_events = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if resp.status().is_success() && is_events {
            return Ok(Streamed::Events(Box::new(EventStream {
                resp,
                parser: SseParser::default(),
                ready: VecDeque::new(),
                ended: false,
            })));
        }
        Ok(Streamed::Json(Self::read(resp).await?))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        req.send().await.map_err(|source| ClientError::Connect {
            url: self.base.clone(),
            source,
        })
    }

    async fn finish(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = self.send(req).await?;
        Self::read(resp).await
    }

    /// The answer's JSON, or the server's error as a [`ClientError::Server`].
    async fn read(resp: reqwest::Response) -> Result<Value, ClientError> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return if status.is_success() {
                Ok(Value::Null)
            } else {
                Err(ClientError::Server {
                    status: status.as_u16(),
                    code: "error".into(),
                    message: status.to_string(),
                })
            };
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
            ClientError::Decode(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        if !status.is_success() {
            let err = &value["error"];
            return Err(ClientError::Server {
                status: status.as_u16(),
                code: err["code"].as_str().unwrap_or("error").to_owned(),
                message: err["message"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_owned(),
            });
        }
        Ok(value)
    }
}

/// A name or id as one path segment.
pub fn seg(s: &str) -> String {
    // Path segments are validated by the server; encode the few characters that would
    // change the path's meaning.
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('#', "%23")
}

/// `path?k=v&…` with the pairs that have a value, each value percent-encoded.
pub fn query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let encode = |v: &str| {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", parts.join("&"))
    }
}

/// What [`Client::open_events`] got back.
pub enum Streamed {
    // Boxed: the stream holds the response and parser, far larger than a JSON value.
    Events(Box<EventStream>),
    Json(Value),
}

/// Server-sent events, read as they arrive.
pub struct EventStream {
    resp: reqwest::Response,
    parser: SseParser,
    /// Events parsed from the last chunk and not handed out yet.
    ready: VecDeque<SseEvent>,
    ended: bool,
}

impl EventStream {
    /// The next event; `None` once the server has closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        let broken = |e: &dyn std::fmt::Display| ClientError::Decode(format!("event stream: {e}"));
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(Some(ev));
            }
            if self.ended {
                return Ok(None);
            }
            match self.resp.chunk().await.map_err(|e| broken(&e))? {
                Some(chunk) => self
                    .ready
                    .extend(self.parser.feed(&chunk).map_err(|e| broken(&e))?),
                None => {
                    self.ended = true;
                    self.ready
                        .extend(self.parser.finish().map_err(|e| broken(&e))?);
                }
            }
        }
    }
}
