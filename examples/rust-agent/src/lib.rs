//! An example agent as a WebAssembly component: it answers with the model, calls the tools
//! the model asks for, remembers in its key-value store how many times it ran, and, when
//! its configuration names a status page, fetches it over HTTP (which the manifest's
//! `allowed_hosts` must allow).

use berth_sdk::llm::{ChatRequest, Message};
use berth_sdk::{Agent, Error, config, http, kv_text, llm, logging, thread, tools};

/// Model turns at most (each may ask for tools).
const MAX_TURNS: usize = 4;

struct Support;

impl Agent for Support {
    fn run(input: String) -> Result<String, Error> {
        let runs = kv_text::get("runs")?
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        kv_text::set("runs", &runs.to_string())?;
        logging::info(&format!("run number {runs}"));

        let mut messages = thread::history();
        messages.push(Message::user(&input));
        let mut request = ChatRequest::new(messages);
        request.system = config::get("system");
        request.tools = tools::list();

        let mut called = Vec::new();
        let mut answer = llm::chat(&request)?;
        for _ in 1..MAX_TURNS {
            if answer.tool_calls.is_empty() {
                break;
            }
            request.messages.push(Message::from_response(&answer));
            for call in &answer.tool_calls {
                let result = tools::call(&call.name, &call.arguments);
                called.push(match &result {
                    Ok(_) => call.name.clone(),
                    Err(e) => format!("{}({})", call.name, e.code),
                });
                request
                    .messages
                    .push(Message::tool_result(&call.id, result));
            }
            answer = llm::chat(&request)?;
        }

        let status = match config::get("status_url") {
            None => "none".to_owned(),
            Some(url) => match http::send(&http::Request::get(&url)) {
                Ok(r) => format!("{} {}", r.status, r.text().trim()),
                Err(e) => format!("unavailable ({})", Error::from(e).code),
            },
        };
        Ok(format!(
            "{}\n[runs: {runs}; tools: {}; status: {status}]",
            answer.text,
            called.join(",")
        ))
    }
}

berth_sdk::export_agent!(Support);
