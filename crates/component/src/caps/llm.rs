//! `llm`: model calls, translated to and from the canonical chat model of `berth-llm` so
//! the caller can hand them to the gateway as they are. Only the models the manifest names
//! (`[model] name` and its fallbacks) may be asked for; no model means the first.

use crate::bindings::{llm, types};
use crate::caps::error;
use crate::state::State;
use berth_llm::{ChatRequest, ChatResponse, FinishReason, Message, Part, Role, ToolDef};

/// The model a request names, if the grants allow it.
pub(crate) fn granted_model(models: &[String], asked: Option<&str>) -> Result<String, String> {
    match asked {
        None => models
            .first()
            .cloned()
            .ok_or_else(|| "this agent may not call models".to_owned()),
        Some(m) if models.iter().any(|g| g == m) => Ok(m.to_owned()),
        Some(m) => Err(format!(
            "model '{m}' is not named in the manifest's [model]"
        )),
    }
}

impl llm::Host for State {
    async fn chat(&mut self, request: llm::ChatRequest) -> Result<llm::ChatResponse, types::Error> {
        let model = granted_model(&self.grants.models, request.model.as_deref())
            .map_err(|m| error("denied", m))?;
        let request = request_from_wit(request, model)?;
        let response = self.host.chat(request).await?;
        Ok(response_to_wit(&response))
    }
}

fn request_from_wit(r: llm::ChatRequest, model: String) -> Result<ChatRequest, types::Error> {
    let tools = r
        .tools
        .into_iter()
        .map(|t| {
            let parameters = serde_json::from_str(&t.parameters).map_err(|e| {
                error(
                    "invalid",
                    format!("tool '{}': parameters are not JSON: {e}", t.name),
                )
            })?;
            Ok(ToolDef {
                name: t.name,
                description: t.description,
                parameters,
            })
        })
        .collect::<Result<Vec<_>, types::Error>>()?;
    Ok(ChatRequest {
        model,
        system: r.system.filter(|s| !s.is_empty()),
        messages: r.messages.into_iter().map(message_from_wit).collect(),
        tools,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        ..ChatRequest::default()
    })
}

fn message_from_wit(m: llm::Message) -> Message {
    let role = match m.role {
        llm::Role::User => Role::User,
        llm::Role::Assistant => Role::Assistant,
        llm::Role::Tool => Role::Tool,
    };
    let content = m
        .content
        .into_iter()
        .filter_map(|p| match p {
            // The canonical model has no empty texts.
            llm::Part::Text(t) if t.is_empty() => None,
            llm::Part::Text(t) => Some(Part::Text(t)),
            llm::Part::Image(url) => Some(Part::Image { url }),
            llm::Part::ToolCall(c) => Some(Part::ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            }),
            llm::Part::ToolResult(r) => Some(Part::ToolResult {
                call_id: r.call_id,
                content: r.content,
                is_error: r.is_error,
            }),
        })
        .collect();
    Message { role, content }
}

pub(crate) fn message_to_wit(m: &Message) -> llm::Message {
    let role = match m.role {
        Role::User => llm::Role::User,
        Role::Assistant => llm::Role::Assistant,
        Role::Tool => llm::Role::Tool,
    };
    let content = m
        .content
        .iter()
        .map(|p| match p {
            Part::Text(t) => llm::Part::Text(t.clone()),
            Part::Image { url } => llm::Part::Image(url.clone()),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => llm::Part::ToolCall(llm::ToolCall {
                id: id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            }),
            Part::ToolResult {
                call_id,
                content,
                is_error,
            } => llm::Part::ToolResult(llm::ToolResult {
                call_id: call_id.clone(),
                content: content.clone(),
                is_error: *is_error,
            }),
        })
        .collect();
    llm::Message { role, content }
}

pub(crate) fn tool_def_to_wit(t: &ToolDef) -> llm::ToolDef {
    llm::ToolDef {
        name: t.name.clone(),
        description: t.description.clone(),
        parameters: t.parameters.to_string(),
    }
}

fn response_to_wit(r: &ChatResponse) -> llm::ChatResponse {
    let tool_calls = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(llm::ToolCall {
                id: id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            }),
            _ => None,
        })
        .collect();
    let finish_reason = match &r.finish {
        FinishReason::Stop => "stop".to_owned(),
        FinishReason::Length => "length".to_owned(),
        FinishReason::ToolCalls => "tool_calls".to_owned(),
        FinishReason::ContentFilter => "content_filter".to_owned(),
        FinishReason::Other(o) => o.clone(),
    };
    llm::ChatResponse {
        model: r.model.clone(),
        text: r.text(),
        tool_calls,
        finish_reason,
        usage: r.usage.map(|u| llm::Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_permission_no_model() {
        assert!(granted_model(&[], None).is_err());
        assert!(granted_model(&[], Some("openai/gpt-4o")).is_err());
        let granted = vec!["mock/echo".to_owned(), "mock/tools".to_owned()];
        assert_eq!(granted_model(&granted, None).unwrap(), "mock/echo");
        assert_eq!(
            granted_model(&granted, Some("mock/tools")).unwrap(),
            "mock/tools"
        );
        assert!(granted_model(&granted, Some("openai/gpt-4o")).is_err());
    }
}
