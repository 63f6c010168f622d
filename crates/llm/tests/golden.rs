//! Golden (snapshot) tests of every translation: OpenAI ⇄ canonical ⇄ Anthropic, for
//! requests, answers and streams. Snapshots live in `tests/snapshots/` and were checked by
//! hand; a change in any rendering shows up as a diff there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use berth_llm::{FinishReason, Part, Role, StreamEvent, Usage, anthropic, openai};
use common::{check_anthropic_sse, check_openai_sse, decode_anthropic, decode_openai, gather};
use serde_json::{Value, json};

/// Everything an OpenAI client may put in a request that the canonical model carries.
fn openai_request() -> Value {
    json!({
        "model": "openai/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these images, and what is the weather in Paris and Oslo?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "4C, "}, {"type": "text", "text": "snow"}]},
            {"role": "user", "content": "Thanks. Summarise."}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "now"}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 100,
        "max_completion_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "user": "user-7",
        "stream": true,
        "stream_options": {"include_usage": true}
    })
}

/// Everything an Anthropic client may put in a request that the canonical model carries.
fn anthropic_request() -> Value {
    json!({
        "model": "anthropic/claude-sonnet-4-5",
        "max_tokens": 512,
        "system": [{"type": "text", "text": "You are a support agent."},
                   {"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look up order 42; here is the receipt."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/receipt.png"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should look it up.", "signature": "sig"},
                {"type": "text", "text": "Looking it up."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"id": 42}},
                {"type": "tool_use", "id": "toolu_2", "name": "track", "input": {"id": 42, "carrier": "dhl"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "shipped"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "carrier unreachable", "is_error": true},
                {"type": "text", "text": "And when will it arrive?"}
            ]}
        ],
        "tools": [
            {"name": "lookup_order", "description": "Find an order", "input_schema": {"type": "object", "properties": {"id": {"type": "integer"}}}},
            {"name": "track", "input_schema": {"type": "object"}}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["###"],
        "temperature": 0.5,
        "top_p": 0.95,
        "metadata": {"user_id": "customer-9"},
        "stream": true
    })
}

#[test]
fn openai_request_to_anthropic() {
    let canonical = openai::parse_request(&openai_request()).unwrap();
    insta::assert_json_snapshot!("openai_request_canonical", canonical);
    insta::assert_json_snapshot!(
        "openai_request_as_anthropic",
        anthropic::render_request(&canonical)
    );
    // Re-rendered for an OpenAI upstream, the stream always asks for usage.
    insta::assert_json_snapshot!(
        "openai_request_as_openai",
        openai::render_request(&canonical)
    );
}

#[test]
fn anthropic_request_to_openai() {
    let canonical = anthropic::parse_request(&anthropic_request()).unwrap();
    insta::assert_json_snapshot!("anthropic_request_canonical", canonical);
    insta::assert_json_snapshot!(
        "anthropic_request_as_openai",
        openai::render_request(&canonical)
    );
    insta::assert_json_snapshot!(
        "anthropic_request_as_anthropic",
        anthropic::render_request(&canonical)
    );
}

#[test]
fn openai_dialects_name_the_answer_limit_differently() {
    let canonical = openai::parse_request(&openai_request()).unwrap();
    let compatible = openai::render_request_for(&canonical, openai::Dialect::Compatible);
    let native = openai::render_request_for(&canonical, openai::Dialect::OpenAi);
    assert_eq!(compatible["max_tokens"], 256);
    assert!(compatible.get("max_completion_tokens").is_none());
    assert_eq!(native["max_completion_tokens"], 256);
    assert!(native.get("max_tokens").is_none());
    assert_eq!(openai::render_request(&canonical), compatible);
}

#[test]
fn anthropic_needs_max_tokens_and_a_stream_always_asks_openai_for_usage() {
    let minimal =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let canonical = openai::parse_request(&minimal).unwrap();
    assert!(!canonical.include_usage, "the client did not ask");
    assert_eq!(
        anthropic::render_request(&canonical)["max_tokens"],
        anthropic::DEFAULT_MAX_TOKENS
    );
    assert_eq!(
        openai::render_request(&canonical)["stream_options"],
        json!({"include_usage": true})
    );
}

fn openai_response() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Checking.", "refusal": null,
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                  "prompt_tokens_details": {"cached_tokens": 100}, "completion_tokens_details": {"reasoning_tokens": 0}}
    })
}

fn anthropic_response() -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
            {"type": "text", "text": "It shipped."},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "dhl"}},
            {"type": "tool_use", "id": "toolu_2", "name": "track", "input": {"id": 42}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 50, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 10, "output_tokens": 12}
    })
}

#[test]
fn responses_both_ways() {
    let from_openai = openai::parse_response(&openai_response()).unwrap();
    insta::assert_json_snapshot!("openai_response_canonical", from_openai);
    insta::assert_json_snapshot!(
        "openai_response_as_anthropic",
        anthropic::render_response(&from_openai)
    );
    insta::assert_json_snapshot!(
        "openai_response_as_openai",
        openai::render_response(&from_openai, 1_700_000_000)
    );

    let from_anthropic = anthropic::parse_response(&anthropic_response()).unwrap();
    // Anthropic counts cache reads and writes apart; canonically they are input tokens.
    let u = from_anthropic.usage.unwrap();
    assert_eq!(
        (u.input_tokens, u.cached_input_tokens, u.output_tokens),
        (260, 200, 12)
    );
    insta::assert_json_snapshot!("anthropic_response_canonical", from_anthropic);
    insta::assert_json_snapshot!(
        "anthropic_response_as_openai",
        openai::render_response(&from_anthropic, 1_700_000_000)
    );
    insta::assert_json_snapshot!(
        "anthropic_response_as_anthropic",
        anthropic::render_response(&from_anthropic)
    );
}

#[test]
fn a_refusal_is_kept_as_text() {
    let r = openai::parse_response(&json!({
        "id": "c", "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]
    }))
    .unwrap();
    assert_eq!(r.text(), "I can't help with that.");
    assert_eq!(r.usage, None);
    let r = anthropic::parse_response(&json!({"id": "m", "model": "c", "type": "message",
        "content": [{"type": "text", "text": "No."}], "stop_reason": "refusal", "usage": {"input_tokens": 1, "output_tokens": 1}}))
    .unwrap();
    assert_eq!(r.finish, FinishReason::ContentFilter);
    assert_eq!(
        openai::render_response(&r, 0)["choices"][0]["finish_reason"],
        "content_filter"
    );
}

/// A recorded OpenAI stream: text, two parallel tool calls (the second's name arrives
/// in one chunk with all its arguments), the finish, and the usage chunk a stream with
/// `include_usage` ends with. Every chunk but the last carries `"usage": null`.
const OPENAI_STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Oslo\\\"}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":9,\"total_tokens\":29,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n",
    "data: [DONE]\n\n",
);

/// A recorded Anthropic stream: usage in `message_start` (cache reads included), a
/// thinking block (which has no canonical form), text, a tool call streamed as JSON
/// fragments, a ping, and two `message_delta`s whose output counts are running totals.
const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":0,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"The user wants order 42.\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"check.\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"lookup\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"id\\\": 4\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"2}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

#[test]
fn openai_stream_to_anthropic_sse() {
    let events = decode_openai(OPENAI_STREAM, &[]);
    insta::assert_json_snapshot!("openai_stream_events", events);
    let mut enc = anthropic::StreamEncoder::new("msg_berth", "openai/gpt-4o-mini", 18);
    let mut sse: String = events.iter().flat_map(|e| enc.encode(e)).collect();
    sse.extend(enc.finish());
    insta::assert_snapshot!("openai_stream_as_anthropic_sse", sse);
    check_anthropic_sse(&sse);
    // What we produced decodes back to the same answer.
    assert_eq!(gather(&decode_anthropic(&sse, &[])), gather(&events));
}

#[test]
fn openai_stream_to_openai_sse() {
    let events = decode_openai(OPENAI_STREAM, &[]);
    let mut enc =
        openai::StreamEncoder::new("chatcmpl-berth", "openai/gpt-4o-mini", 1_700_000_000, true);
    let mut sse: String = events.iter().flat_map(|e| enc.encode(e)).collect();
    sse.extend(enc.finish(Some(("berth", json!({"cost_usd": 0.000012})))));
    insta::assert_snapshot!("openai_stream_as_openai_sse", sse);
    assert!(check_openai_sse(&sse));
    assert_eq!(gather(&decode_openai(&sse, &[])), gather(&events));
}

#[test]
fn anthropic_stream_to_openai_sse() {
    let events = decode_anthropic(ANTHROPIC_STREAM, &[]);
    insta::assert_json_snapshot!("anthropic_stream_events", events);
    let mut enc = openai::StreamEncoder::new(
        "chatcmpl-berth",
        "anthropic/claude-haiku-4-5",
        1_700_000_000,
        true,
    );
    let mut sse: String = events.iter().flat_map(|e| enc.encode(e)).collect();
    sse.extend(enc.finish(None));
    insta::assert_snapshot!("anthropic_stream_as_openai_sse", sse);
    assert!(check_openai_sse(&sse));
    assert_eq!(gather(&decode_openai(&sse, &[])), gather(&events));

    // A client that did not ask for usage gets no chunk without choices.
    let mut enc = openai::StreamEncoder::new("c", "m", 0, false);
    let mut sse: String = events.iter().flat_map(|e| enc.encode(e)).collect();
    sse.extend(enc.finish(Some(("berth", json!({"cost_usd": 1.0})))));
    assert!(!check_openai_sse(&sse));
    assert!(!sse.contains("\"choices\":[]"));
    assert!(sse.ends_with("\"finish_reason\":\"tool_calls\",\"index\":0,\"logprobs\":null}],\"created\":0,\"id\":\"c\",\"model\":\"m\",\"object\":\"chat.completion.chunk\"}\n\ndata: [DONE]\n\n"));
}

#[test]
fn anthropic_stream_to_anthropic_sse() {
    let events = decode_anthropic(ANTHROPIC_STREAM, &[]);
    // The estimate is not used: the upstream's own input count arrived before content.
    let mut enc = anthropic::StreamEncoder::new("msg_berth", "anthropic/claude-haiku-4-5", 999);
    let mut sse: String = events.iter().flat_map(|e| enc.encode(e)).collect();
    sse.extend(enc.finish());
    insta::assert_snapshot!("anthropic_stream_as_anthropic_sse", sse);
    check_anthropic_sse(&sse);
    assert!(!sse.contains("999"));
    assert_eq!(gather(&decode_anthropic(&sse, &[])), gather(&events));
}

#[test]
fn anthropic_usage_is_the_last_cumulative_report() {
    let g = gather(&decode_anthropic(ANTHROPIC_STREAM, &[]));
    // Output: 15 is the total, not 1 + 7 + 15. Input: 25 uncached + 100 cache reads.
    assert_eq!(
        g.usage,
        Some(Usage {
            input_tokens: 125,
            output_tokens: 15,
            cached_input_tokens: 100
        })
    );
    assert_eq!(g.finish, Some(FinishReason::ToolCalls));
    assert_eq!(
        g.parts,
        vec![
            Part::Text("Let me check.".into()),
            Part::ToolCall {
                id: "toolu_1".into(),
                name: "lookup".into(),
                arguments: "{\"id\": 42}".into()
            }
        ]
    );

    // Newer API versions repeat the input counts in `message_delta`, also cumulatively;
    // a count a delta leaves out keeps its earlier value.
    let mut d = anthropic::StreamDecoder::default();
    let mut last = None;
    for (event, data) in [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "model": "c",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 3, "output_tokens": 1}}}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 4}}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 9}}),
        ),
    ] {
        for e in d.decode(event, &data.to_string()).unwrap() {
            if let StreamEvent::Usage { usage } = e {
                last = Some(usage);
            }
        }
    }
    assert_eq!(
        last,
        Some(Usage {
            input_tokens: 18,
            output_tokens: 9,
            cached_input_tokens: 5
        })
    );
}

#[test]
fn stream_errors_are_upstream_errors() {
    let mut d = anthropic::StreamDecoder::default();
    let e = d
        .decode(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
    assert_eq!(e, berth_llm::LlmError::Upstream("Overloaded".into()));
    let e = openai::decode_chunk(
        r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
    )
    .unwrap_err();
    assert_eq!(
        e,
        berth_llm::LlmError::Upstream("The server had an error".into())
    );
    assert!(matches!(
        openai::parse_response(&json!({"error": {"message": "bad key"}})),
        Err(berth_llm::LlmError::Upstream(m)) if m == "bad key"
    ));
    assert!(matches!(
        anthropic::parse_response(&json!({"type": "error", "error": {"type": "api_error", "message": "boom"}})),
        Err(berth_llm::LlmError::Upstream(m)) if m == "boom"
    ));
}

#[test]
fn repeated_tool_call_starts_open_one_call() {
    // Some OpenAI-compatible servers repeat the id and name in every chunk of a call.
    let chunk = |args: &str| {
        json!({"id": "x", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": args}}]}, "finish_reason": null}]})
        .to_string()
    };
    let events: Vec<StreamEvent> = ["{\"a\":", "1}"]
        .iter()
        .flat_map(|a| openai::decode_chunk(&chunk(a)).unwrap())
        .collect();
    let mut a = anthropic::StreamEncoder::new("m", "m", 1);
    let mut sse: String = events.iter().flat_map(|e| a.encode(e)).collect();
    sse.extend(a.finish());
    check_anthropic_sse(&sse);
    assert_eq!(sse.matches("event: content_block_start").count(), 1);
    let mut o = openai::StreamEncoder::new("c", "m", 0, false);
    let mut sse: String = events.iter().flat_map(|e| o.encode(e)).collect();
    sse.extend(o.finish(None));
    check_openai_sse(&sse);
    assert_eq!(
        gather(&decode_openai(&sse, &[])).parts,
        vec![Part::ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into()
        }]
    );
}

#[test]
fn tool_results_become_their_own_turn_and_merge_back() {
    let req = anthropic::parse_request(&anthropic_request()).unwrap();
    assert_eq!(
        req.messages.iter().map(|m| m.role).collect::<Vec<_>>(),
        vec![Role::User, Role::Assistant, Role::Tool, Role::User]
    );
    assert!(
        matches!(&req.messages[2].content[1], Part::ToolResult { content, is_error: true, .. } if content == "carrier unreachable")
    );
    let rendered = anthropic::render_request(&req);
    // Rendered back, the tool results and the question share one user turn again, results
    // first (Anthropic requires that order).
    let turns = rendered["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    let types: Vec<&str> = turns[2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["tool_result", "tool_result", "text"]);
}
