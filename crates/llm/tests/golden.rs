//! Golden (snapshot) tests of every translation: OpenAI ⇄ canonical ⇄ Anthropic, for
//! requests, answers and streams. Snapshots live in `tests/snapshots/` and were checked by
//! hand; a change in any rendering shows up as a diff there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_llm::sse::SseParser;
use berth_llm::{
    ChatRequest, LlmError, Message, Part, Role, StreamEvent, ToolChoice, ToolDef, anthropic, openai,
};
use serde_json::{Value, json};

fn openai_request() -> Value {
    json!({
        "model": "openai/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and what is the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
            {"role": "user", "content": "Thanks. Summarise."}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "auto",
        "max_tokens": 256,
        "temperature": 0.2,
        "stop": ["END"],
        "stream": true,
        "stream_options": {"include_usage": true}
    })
}

fn anthropic_request() -> Value {
    json!({
        "model": "anthropic/claude-sonnet-4-5",
        "max_tokens": 512,
        "system": [{"type": "text", "text": "You are a support agent."}],
        "messages": [
            {"role": "user", "content": "Look up order 42."},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Looking it up."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"id": 42}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "shipped"}]},
                {"type": "text", "text": "And when will it arrive?"}
            ]}
        ],
        "tools": [{"name": "lookup_order", "description": "Find an order", "input_schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["###"],
        "stream": false
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
}

#[test]
fn anthropic_request_to_openai() {
    let canonical = anthropic::parse_request(&anthropic_request()).unwrap();
    insta::assert_json_snapshot!("anthropic_request_canonical", canonical);
    insta::assert_json_snapshot!(
        "anthropic_request_as_openai",
        openai::render_request(&canonical)
    );
}

#[test]
fn requests_round_trip_through_each_format() {
    let a = openai::parse_request(&openai_request()).unwrap();
    assert_eq!(
        openai::parse_request(&openai::render_request(&a)).unwrap(),
        a
    );
    let b = anthropic::parse_request(&anthropic_request()).unwrap();
    let mut back = anthropic::parse_request(&anthropic::render_request(&b)).unwrap();
    back.stream = b.stream;
    assert_eq!(back, b);
    // Across formats the conversation survives (system, turns, tool calls and results).
    let via_anthropic = anthropic::parse_request(&anthropic::render_request(&a)).unwrap();
    assert_eq!(via_anthropic.messages, a.messages);
    assert_eq!(via_anthropic.system, a.system);
    assert_eq!(via_anthropic.tools, a.tools);
}

#[test]
fn responses_both_ways() {
    let from_openai = openai::parse_response(&json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150, "prompt_tokens_details": {"cached_tokens": 100}}
    }))
    .unwrap();
    insta::assert_json_snapshot!(
        "openai_response_as_anthropic",
        anthropic::render_response(&from_openai)
    );
    let from_anthropic = anthropic::parse_response(&json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "It shipped."}, {"type": "tool_use", "id": "toolu_2", "name": "track", "input": {"id": 42}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 50, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 10, "output_tokens": 12}
    }))
    .unwrap();
    // Anthropic counts cache reads and writes apart; canonically they are input tokens.
    let u = from_anthropic.usage.unwrap();
    assert_eq!(
        (u.input_tokens, u.cached_input_tokens, u.output_tokens),
        (260, 200, 12)
    );
    insta::assert_json_snapshot!(
        "anthropic_response_as_openai",
        openai::render_response(&from_anthropic, 1_700_000_000)
    );
}

const OPENAI_STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Oslo\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":9,\"total_tokens\":29}}\n\n",
    "data: [DONE]\n\n",
);

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check.\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"lookup\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"id\\\": 4\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"2}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

fn decode_openai(text: &str) -> Vec<StreamEvent> {
    let mut p = SseParser::default();
    p.feed(text.as_bytes())
        .unwrap()
        .iter()
        .flat_map(|e| openai::decode_chunk(&e.data).unwrap())
        .collect()
}

fn decode_anthropic(text: &str) -> Vec<StreamEvent> {
    let mut p = SseParser::default();
    let mut d = anthropic::StreamDecoder::default();
    p.feed(text.as_bytes())
        .unwrap()
        .iter()
        .flat_map(|e| d.decode(&e.event, &e.data).unwrap())
        .collect()
}

#[test]
fn openai_stream_to_anthropic_sse() {
    let events = decode_openai(OPENAI_STREAM);
    insta::assert_json_snapshot!("openai_stream_events", events);
    let mut enc = anthropic::StreamEncoder::new("msg_berth", "openai/gpt-4o-mini", 18);
    let mut sse: String = events.iter().flat_map(|e| enc.encode(e)).collect();
    sse.extend(enc.finish());
    insta::assert_snapshot!("openai_stream_as_anthropic_sse", sse);
    // And what we produced decodes back to the same content.
    let back = decode_anthropic(&sse);
    let text: String = back
        .iter()
        .filter_map(|e| {
            if let StreamEvent::TextDelta { text } = e {
                Some(text.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(text, "Hello world");
}

#[test]
fn anthropic_stream_to_openai_sse() {
    let events = decode_anthropic(ANTHROPIC_STREAM);
    insta::assert_json_snapshot!("anthropic_stream_events", events);
    // Output usage is cumulative: the last report (15) is the total, not 1 + 7 + 15.
    let last_usage = events
        .iter()
        .rev()
        .find_map(|e| {
            if let StreamEvent::Usage { usage } = e {
                Some(*usage)
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(
        (last_usage.input_tokens, last_usage.output_tokens),
        (25, 15)
    );
    let mut enc = openai::StreamEncoder::new(
        "chatcmpl-berth",
        "anthropic/claude-haiku-4-5",
        1_700_000_000,
        true,
    );
    let mut sse: String = events.iter().flat_map(|e| enc.encode(e)).collect();
    sse.extend(enc.finish(None));
    insta::assert_snapshot!("anthropic_stream_as_openai_sse", sse);
    let back = decode_openai(&sse);
    assert!(back.contains(&StreamEvent::ToolCallDelta {
        index: 0,
        arguments: "2}".into()
    }));
}

#[test]
fn bad_requests_name_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"messages": []}), "model"),
        (json!({"model": "m"}), "messages"),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"model": "m", "messages": [], "max_tokens": -1}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "messages": [], "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": "m", "messages": [], "tools": [{"function": {}}]}),
            "tools[0].function.name",
        ),
    ];
    for (body, want) in cases {
        match openai::parse_request(&body) {
            Err(LlmError::Field { field, .. }) => assert_eq!(field, want, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    match anthropic::parse_request(
        &json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
    ) {
        Err(LlmError::Field { field, .. }) => {
            assert_eq!(field, "messages[0].content[0].tool_use_id")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        openai::decode_chunk("{not json"),
        Err(LlmError::Json(_))
    ));
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic_on_arbitrary_json(s in "\\PC{0,200}") {
        if let Ok(v) = serde_json::from_str::<Value>(&s) {
            let _ = openai::parse_request(&v);
            let _ = anthropic::parse_request(&v);
            let _ = openai::parse_response(&v);
            let _ = anthropic::parse_response(&v);
        }
        let _ = openai::decode_chunk(&s);
        let _ = anthropic::StreamDecoder::default().decode("message_delta", &s);
    }

    #[test]
    fn canonical_text_conversations_round_trip(texts in proptest::collection::vec("[a-zA-Z0-9 .,!?]{1,40}", 1..6), system in proptest::option::of("[a-z ]{1,20}")) {
        let messages = texts.iter().enumerate().map(|(i, t)| Message::text(if i % 2 == 0 { Role::User } else { Role::Assistant }, t.clone())).collect();
        let req = ChatRequest {
            model: "p/m".into(), system, messages, max_tokens: Some(100),
            tools: vec![ToolDef { name: "t".into(), description: None, parameters: json!({"type": "object"}) }],
            tool_choice: Some(ToolChoice::Tool("t".into())), ..Default::default()
        };
        proptest::prop_assert_eq!(&openai::parse_request(&openai::render_request(&req)).unwrap(), &req);
        let mut via = anthropic::parse_request(&anthropic::render_request(&req)).unwrap();
        via.include_usage = req.include_usage;
        proptest::prop_assert_eq!(&via, &req);
    }
}

#[test]
fn tool_results_become_their_own_turn_and_merge_back() {
    let req = anthropic::parse_request(&anthropic_request()).unwrap();
    assert_eq!(
        req.messages.iter().map(|m| m.role).collect::<Vec<_>>(),
        vec![Role::User, Role::Assistant, Role::Tool, Role::User]
    );
    assert!(
        matches!(&req.messages[2].content[0], Part::ToolResult { content, .. } if content == "shipped")
    );
    let rendered = anthropic::render_request(&req);
    // Rendered back, the tool result and the question share one user turn again.
    assert_eq!(rendered["messages"].as_array().unwrap().len(), 3);
}
