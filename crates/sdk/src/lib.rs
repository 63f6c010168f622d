//! Write Berth agents as WebAssembly components: bindings to the `berth:agent` world
//! (`wit/agent.wit`) and a few helpers.
//!
//! An agent implements [`Agent`] and exports it with [`export_agent!`]:
//!
//! ```ignore
//! use berth_sdk::{Agent, Error, llm};
//!
//! struct Hello;
//!
//! impl Agent for Hello {
//!     fn run(input: String) -> Result<String, Error> {
//!         let answer = llm::chat(&llm::ChatRequest::new(vec![llm::Message::user(&input)]))?;
//!         Ok(answer.text)
//!     }
//! }
//!
//! berth_sdk::export_agent!(Hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type `cdylib`); the
//! `.wasm` file is the component to name in the manifest's `[component] path`.
//!
//! Everything the component can do goes through the imports: model calls ([`llm`]), tools
//! ([`tools`]), its own key-value store ([`kv`]), the thread's history ([`thread`]), log
//! lines ([`log`]), HTTP to the manifest's `allowed_hosts` ([`http`]) and non-secret
//! configuration ([`config`]). No import returns a secret. WASI is there for the standard
//! library (clocks, random numbers, stdout and stderr, which go to the run's log), with no
//! files, no environment variables and no sockets.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "agent",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_agent",
        default_bindings_module: "berth_sdk::bindings",
    });
}

#[doc(hidden)]
pub use bindings::*;

pub use bindings::Guest as Agent;
pub use bindings::berth::agent::types::Error;
pub use bindings::berth::agent::{config, http, kv, llm, log, thread, tools};
/// Exports a type implementing [`Agent`] as the component's `run`.
pub use bindings::export_agent;

impl Error {
    /// An error with a code (`invalid`, `not_found`, `failed`...) and a message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl From<http::HttpError> for Error {
    fn from(e: http::HttpError) -> Self {
        let code = match &e {
            http::HttpError::Denied(_) => "denied",
            http::HttpError::Invalid(_) => "invalid",
            http::HttpError::Failed(_) => "failed",
        };
        let message = match e {
            http::HttpError::Denied(m)
            | http::HttpError::Invalid(m)
            | http::HttpError::Failed(m) => m,
        };
        Error::new(code, message)
    }
}

impl llm::Message {
    /// A user message with one text part.
    pub fn user(text: &str) -> Self {
        Self::text(llm::Role::User, text)
    }

    /// An assistant message with one text part.
    pub fn assistant(text: &str) -> Self {
        Self::text(llm::Role::Assistant, text)
    }

    /// A message with one text part.
    pub fn text(role: llm::Role, text: &str) -> Self {
        llm::Message {
            role,
            content: vec![llm::Part::Text(text.to_owned())],
        }
    }

    /// The assistant turn of a response: its text and its tool calls, to send back to the
    /// model with the results.
    pub fn from_response(response: &llm::ChatResponse) -> Self {
        let mut content = Vec::new();
        if !response.text.is_empty() {
            content.push(llm::Part::Text(response.text.clone()));
        }
        content.extend(response.tool_calls.iter().cloned().map(llm::Part::ToolCall));
        llm::Message {
            role: llm::Role::Assistant,
            content,
        }
    }

    /// A tool message answering one call.
    pub fn tool_result(call_id: &str, result: Result<String, Error>) -> Self {
        let (content, is_error) = match result {
            Ok(text) => (text, false),
            Err(e) => (format!("{}: {}", e.code, e.message), true),
        };
        llm::Message {
            role: llm::Role::Tool,
            content: vec![llm::Part::ToolResult(llm::ToolResult {
                call_id: call_id.to_owned(),
                content,
                is_error,
            })],
        }
    }

    /// The message's text parts joined.
    pub fn text_content(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                llm::Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl llm::ChatRequest {
    /// A request on the manifest's model with these messages, no tools.
    pub fn new(messages: Vec<llm::Message>) -> Self {
        llm::ChatRequest {
            model: None,
            system: None,
            messages,
            tools: Vec::new(),
            max_tokens: None,
            temperature: None,
        }
    }
}

impl http::Request {
    /// A `GET` with no headers.
    pub fn get(url: &str) -> Self {
        http::Request {
            method: "GET".to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `POST` of a JSON body.
    pub fn post_json(url: &str, json: &str) -> Self {
        http::Request {
            method: "POST".to_owned(),
            url: url.to_owned(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: json.as_bytes().to_vec(),
        }
    }
}

impl http::Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Text values in [`kv`].
pub mod kv_text {
    use super::{Error, kv};

    pub fn get(key: &str) -> Result<Option<String>, Error> {
        Ok(kv::get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set(key: &str, value: &str) -> Result<(), Error> {
        kv::set(key, value.as_bytes())
    }
}

/// Log lines at each level.
pub mod logging {
    use super::log::{Level, write};

    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }
    pub fn info(message: &str) {
        write(Level::Info, message);
    }
    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }
    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}
