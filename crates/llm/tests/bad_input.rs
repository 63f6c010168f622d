//! Bad input: every malformed request is refused with an error naming the field a client
//! must fix, and no input at all (arbitrary JSON, arbitrary bytes, arbitrary event
//! sequences) makes a parser, decoder or encoder panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_llm::sse::SseParser;
use berth_llm::{FinishReason, LlmError, StreamEvent, Usage, anthropic, embeddings, openai};
use proptest::prelude::*;
use serde_json::{Value, json};

fn field_of(r: Result<berth_llm::ChatRequest, LlmError>, body: &Value) -> String {
    match r {
        Err(LlmError::Field { field, message }) => {
            assert!(!message.is_empty());
            field
        }
        other => panic!("{body}: expected a field error, got {other:?}"),
    }
}

fn user(content: Value) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": content}]})
}

fn with(extra: Value) -> Value {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn openai_requests_name_the_field() {
    let assistant_calls = |calls: Value| json!({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": calls}]});
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "body"),
        (json!({"messages": []}), "model"),
        (json!({"model": 5, "messages": []}), "model"),
        (json!({"model": "", "messages": []}), "model"),
        (json!({"model": "m"}), "messages"),
        (json!({"model": "m", "messages": {}}), "messages"),
        (json!({"model": "m", "messages": []}), "messages"),
        (json!({"model": "m", "messages": [5]}), "messages[0]"),
        (
            json!({"model": "m", "messages": [{"role": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": 1, "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "m", "messages": [{"role": "system"}]}),
            "messages[0].content",
        ),
        (user(json!(5)), "messages[0].content"),
        (user(json!({"text": "x"})), "messages[0].content"),
        (user(json!([5])), "messages[0].content[0]"),
        (
            user(json!([{"type": "input_audio", "input_audio": {}}])),
            "messages[0].content[0].type",
        ),
        (
            user(json!([{"type": "file"}])),
            "messages[0].content[0].type",
        ),
        (user(json!([{"text": "x"}])), "messages[0].content[0].type"),
        (
            user(json!([{"type": "text", "text": 5}])),
            "messages[0].content[0].text",
        ),
        (
            user(json!([{"type": "text"}])),
            "messages[0].content[0].text",
        ),
        (
            user(json!([{"type": "image_url"}])),
            "messages[0].content[0].image_url",
        ),
        (
            user(json!([{"type": "image_url", "image_url": {}}])),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]}),
            "messages[0].content[0].type",
        ),
        (assistant_calls(json!({})), "messages[1].tool_calls"),
        (assistant_calls(json!([5])), "messages[1].tool_calls[0]"),
        (
            assistant_calls(json!([{"id": "c", "function": {}}])),
            "messages[1].tool_calls[0].function.name",
        ),
        (
            assistant_calls(json!([{"id": "c"}])),
            "messages[1].tool_calls[0].function",
        ),
        (
            assistant_calls(json!([{"function": {"name": "f"}}])),
            "messages[1].tool_calls[0].id",
        ),
        (
            assistant_calls(json!([{"id": "c", "type": "custom", "custom": {}}])),
            "messages[1].tool_calls[0].type",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "content": null, "function_call": {"name": "f"}}]}),
            "messages[0].function_call",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "c"}]}),
            "messages[0].content",
        ),
        (with(json!({"max_tokens": -1})), "max_tokens"),
        (with(json!({"max_tokens": 0})), "max_tokens"),
        (with(json!({"max_tokens": "5"})), "max_tokens"),
        (with(json!({"max_tokens": 5_000_000_000u64})), "max_tokens"),
        (
            with(json!({"max_completion_tokens": 1.5})),
            "max_completion_tokens",
        ),
        (with(json!({"temperature": "hot"})), "temperature"),
        (with(json!({"top_p": [1]})), "top_p"),
        (with(json!({"stream": "yes"})), "stream"),
        (with(json!({"stream_options": true})), "stream_options"),
        (
            with(json!({"stream_options": {"include_usage": "yes"}})),
            "stream_options.include_usage",
        ),
        (with(json!({"tools": {}})), "tools"),
        (with(json!({"tools": [5]})), "tools[0]"),
        (
            with(json!({"tools": [{"function": {}}]})),
            "tools[0].function.name",
        ),
        (
            with(json!({"tools": [{"type": "function"}]})),
            "tools[0].function.name",
        ),
        (
            with(json!({"tools": [{"type": "web_search"}]})),
            "tools[0].type",
        ),
        (
            with(
                json!({"tools": [{"type": "function", "function": {"name": "f", "description": 1}}]}),
            ),
            "tools[0].function.description",
        ),
        (
            with(
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}),
            ),
            "tools[0].function.parameters",
        ),
        (with(json!({"tool_choice": "sometimes"})), "tool_choice"),
        (with(json!({"tool_choice": 5})), "tool_choice"),
        (
            with(json!({"tool_choice": {"type": "function"}})),
            "tool_choice.function.name",
        ),
        (
            with(json!({"tool_choice": {"type": "function", "function": {}}})),
            "tool_choice.function.name",
        ),
        (with(json!({"stop": 5})), "stop"),
        (with(json!({"stop": ["a", 1]})), "stop[1]"),
        (with(json!({"n": 2})), "n"),
        (with(json!({"n": "1"})), "n"),
        (with(json!({"functions": [{"name": "f"}]})), "functions"),
        (with(json!({"function_call": "auto"})), "function_call"),
        (with(json!({"user": 5})), "user"),
    ];
    for (body, want) in cases {
        assert_eq!(
            field_of(openai::parse_request(&body), &body),
            want,
            "{body}"
        );
    }
    // What is allowed stays allowed: nulls for unset fields, `n: 1`, no content on an
    // assistant turn with only tool calls.
    openai::parse_request(&with(
        json!({"n": 1, "temperature": null, "tools": null, "stop": null,
        "stream_options": null, "max_tokens": null, "user": null}),
    ))
    .unwrap();
    openai::parse_request(&json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]},
        {"role": "tool", "tool_call_id": "c", "content": ""}]}))
    .unwrap();
}

#[test]
fn anthropic_requests_name_the_field() {
    let block = |b: Value| user(json!([b]));
    let cases: Vec<(Value, &str)> = vec![
        (json!("x"), "body"),
        (json!({"messages": []}), "model"),
        (json!({"model": "m"}), "messages"),
        (json!({"model": "m", "messages": []}), "messages"),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (user(json!(5)), "messages[0].content"),
        (user(json!([5])), "messages[0].content[0]"),
        (block(json!({"text": "x"})), "messages[0].content[0].type"),
        (
            block(json!({"type": "document", "source": {}})),
            "messages[0].content[0].type",
        ),
        (
            block(json!({"type": "text"})),
            "messages[0].content[0].text",
        ),
        (
            block(json!({"type": "image"})),
            "messages[0].content[0].source",
        ),
        (
            block(json!({"type": "image", "source": {"type": "file", "file_id": "f"}})),
            "messages[0].content[0].source.type",
        ),
        (
            block(json!({"type": "image", "source": {"type": "base64", "data": "x"}})),
            "messages[0].content[0].source.media_type",
        ),
        (
            block(json!({"type": "image", "source": {"type": "url"}})),
            "messages[0].content[0].source.url",
        ),
        (
            block(json!({"type": "tool_result"})),
            "messages[0].content[0].tool_use_id",
        ),
        (
            block(json!({"type": "tool_result", "tool_use_id": "t", "content": 5})),
            "messages[0].content[0].content",
        ),
        (
            block(
                json!({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}),
            ),
            "messages[0].content[0].content[0].type",
        ),
        (
            block(json!({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"})),
            "messages[0].content[0].is_error",
        ),
        (
            block(json!({"type": "tool_use", "id": "t", "name": "f", "input": {}})),
            "messages[0].content[0].type",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}]}),
            "messages[0].content[0].id",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]}),
            "messages[0].content[0].input",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]}),
            "messages[0].content[0].type",
        ),
        (with(json!({"system": 5})), "system"),
        (with(json!({"system": [5]})), "system[0]"),
        (
            with(json!({"system": [{"type": "image"}]})),
            "system[0].type",
        ),
        (
            with(json!({"system": [{"type": "text"}]})),
            "system[0].text",
        ),
        (with(json!({"tools": [{}]})), "tools[0].name"),
        (
            with(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]})),
            "tools[0].type",
        ),
        (
            with(json!({"tools": [{"name": "f", "input_schema": []}]})),
            "tools[0].input_schema",
        ),
        (with(json!({"tool_choice": "auto"})), "tool_choice"),
        (with(json!({"tool_choice": {}})), "tool_choice.type"),
        (
            with(json!({"tool_choice": {"type": "maybe"}})),
            "tool_choice.type",
        ),
        (
            with(json!({"tool_choice": {"type": "tool"}})),
            "tool_choice.name",
        ),
        (with(json!({"max_tokens": 0})), "max_tokens"),
        (with(json!({"max_tokens": "1"})), "max_tokens"),
        (with(json!({"temperature": "x"})), "temperature"),
        (with(json!({"top_p": true})), "top_p"),
        (with(json!({"stop_sequences": "x"})), "stop_sequences"),
        (with(json!({"stop_sequences": [1]})), "stop_sequences[0]"),
        (with(json!({"metadata": 5})), "metadata"),
        (
            with(json!({"metadata": {"user_id": 5}})),
            "metadata.user_id",
        ),
        (with(json!({"stream": 1})), "stream"),
    ];
    for (body, want) in cases {
        assert_eq!(
            field_of(anthropic::parse_request(&body), &body),
            want,
            "{body}"
        );
    }
}

#[test]
fn malformed_streams_and_answers_are_errors_not_panics() {
    assert!(matches!(
        openai::decode_chunk("{not json"),
        Err(LlmError::Json(_))
    ));
    assert!(matches!(
        anthropic::StreamDecoder::default().decode("message_start", "{not json"),
        Err(LlmError::Json(_))
    ));
    assert_eq!(openai::decode_chunk("[DONE]").unwrap(), vec![]);
    assert_eq!(openai::decode_chunk("{}").unwrap(), vec![]);
    assert!(matches!(
        openai::parse_response(&json!({"choices": []})),
        Err(LlmError::Field { field, .. }) if field == "choices"
    ));
    assert!(matches!(
        openai::parse_response(&json!({"choices": [{"message": "x"}]})),
        Err(LlmError::Field { field, .. }) if field == "choices[0].message"
    ));
    assert!(matches!(
        anthropic::parse_response(&json!({"type": "message"})),
        Err(LlmError::Field { field, .. }) if field == "content"
    ));
    // An input delta for a block that never started as a tool call is dropped.
    let mut d = anthropic::StreamDecoder::default();
    assert_eq!(
        d.decode("content_block_delta", r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#)
            .unwrap(),
        vec![]
    );
}

/// Arbitrary JSON, biased towards the keys and words the parsers look at, so that the
/// generated values reach deep into the parsers rather than failing at the top.
fn arb_json() -> impl Strategy<Value = Value> {
    let words = prop_oneof![
        Just("user"),
        Just("assistant"),
        Just("system"),
        Just("developer"),
        Just("tool"),
        Just("text"),
        Just("image_url"),
        Just("image"),
        Just("tool_use"),
        Just("tool_result"),
        Just("function"),
        Just("base64"),
        Just("url"),
        Just("auto"),
        Just("any"),
        Just("none"),
        Just("required"),
        Just("thinking"),
        Just("data:image/png;base64,AA"),
        Just("[DONE]"),
        Just("message_start"),
        Just("message_delta"),
        Just("content_block_start"),
        Just("content_block_delta"),
        Just("text_delta"),
        Just("input_json_delta"),
        Just("error"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        words.prop_map(|w| json!(w)),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("model"),
        Just("messages"),
        Just("role"),
        Just("content"),
        Just("type"),
        Just("text"),
        Just("tool_calls"),
        Just("function"),
        Just("name"),
        Just("arguments"),
        Just("id"),
        Just("tool_call_id"),
        Just("image_url"),
        Just("url"),
        Just("source"),
        Just("media_type"),
        Just("data"),
        Just("input"),
        Just("tool_use_id"),
        Just("is_error"),
        Just("tools"),
        Just("parameters"),
        Just("input_schema"),
        Just("tool_choice"),
        Just("max_tokens"),
        Just("max_completion_tokens"),
        Just("stream"),
        Just("stream_options"),
        Just("include_usage"),
        Just("stop"),
        Just("stop_sequences"),
        Just("system"),
        Just("choices"),
        Just("message"),
        Just("delta"),
        Just("index"),
        Just("finish_reason"),
        Just("usage"),
        Just("prompt_tokens"),
        Just("input_tokens"),
        Just("output_tokens"),
        Just("content_block"),
        Just("partial_json"),
        Just("stop_reason"),
        Just("error"),
        Just("metadata"),
        Just("user_id"),
        Just("embedding"),
        Just("refusal"),
        Just("n"),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn arb_event() -> impl Strategy<Value = StreamEvent> {
    let text = "\\PC{0,6}";
    prop_oneof![
        (text, text).prop_map(|(id, model)| StreamEvent::Start { id, model }),
        text.prop_map(|text| StreamEvent::TextDelta { text }),
        (0u32..4, text, text).prop_map(|(index, id, name)| StreamEvent::ToolCallStart {
            index,
            id,
            name
        }),
        (0u32..4, text)
            .prop_map(|(index, arguments)| StreamEvent::ToolCallDelta { index, arguments }),
        prop_oneof![
            Just(FinishReason::Stop),
            Just(FinishReason::ToolCalls),
            text.prop_map(FinishReason::Other)
        ]
        .prop_map(|reason| StreamEvent::Finish { reason }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(i, o, c)| StreamEvent::Usage {
            usage: Usage {
                input_tokens: i,
                output_tokens: o,
                cached_input_tokens: c
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic_on_arbitrary_json(v in arb_json(), inner in arb_json()) {
        // At the top level, and as the message list of an otherwise valid request.
        let nested = json!({"model": "m", "messages": [inner.clone()], "tools": [inner.clone()],
                            "choices": [inner.clone()], "content": inner.clone(), "input": inner.clone()});
        for body in [&v, &nested] {
            if let Ok(req) = openai::parse_request(body) {
                // Whatever is accepted renders, and the rendering reads back.
                let again = openai::render_request(&req);
                prop_assert!(openai::parse_request(&again).is_ok(), "{again}");
                let _ = anthropic::render_request(&req);
            }
            if let Ok(req) = anthropic::parse_request(body) {
                let _ = openai::render_request(&req);
                let _ = anthropic::render_request(&req);
            }
            if let Ok(resp) = openai::parse_response(body) {
                let _ = anthropic::render_response(&resp);
            }
            if let Ok(resp) = anthropic::parse_response(body) {
                let _ = openai::render_response(&resp, 0);
            }
            let _ = embeddings::parse_request(body);
            let _ = embeddings::parse_response(body);
            let s = body.to_string();
            let _ = openai::decode_chunk(&s);
            let mut d = anthropic::StreamDecoder::default();
            for event in ["message_start", "content_block_start", "content_block_delta", "message_delta", "error", "x"] {
                let _ = d.decode(event, &s);
            }
        }
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = openai::decode_chunk(&s);
        let _ = anthropic::StreamDecoder::default().decode("message_delta", &s);
    }

    #[test]
    fn the_sse_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400), cut in 0usize..400) {
        let mut p = SseParser::with_limit(64);
        let cut = cut.min(bytes.len());
        let _ = p.feed(&bytes[..cut]);
        let _ = p.feed(&bytes[cut..]);
        let _ = p.finish();
    }

    /// However a stream is cut into chunks (mid-line, mid-CRLF, mid-UTF-8 sequence), the
    /// parser yields the same events, and the same refusal past its limit.
    #[test]
    fn sse_events_do_not_depend_on_how_the_stream_is_cut(
        lines in prop::collection::vec(
            prop_oneof![
                "data: \\PC{0,20}",
                "event: [a-z_]{1,12}",
                ": [a-z ]{0,10}",
                "id: [0-9]{1,4}",
                Just(String::new()),
                "da\\PC{0,5}",
            ],
            0..30,
        ),
        endings in prop::collection::vec(prop_oneof![Just("\n"), Just("\r\n"), Just("\r")], 30),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            text.push_str(l);
            text.push_str(endings[i % endings.len()]);
        }
        let bytes = text.as_bytes();
        let run = |pieces: &[&[u8]]| {
            let mut p = SseParser::with_limit(128);
            let mut out = Vec::new();
            for piece in pieces {
                match p.feed(piece) {
                    Ok(evs) => out.extend(evs),
                    Err(e) => return Err(e.to_string()),
                }
            }
            match p.finish() {
                Ok(last) => out.extend(last),
                Err(e) => return Err(e.to_string()),
            }
            Ok(out)
        };
        let whole = run(&[bytes]);
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.sort_unstable();
        at.dedup();
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut from = 0;
        for c in at {
            pieces.push(&bytes[from..c]);
            from = c;
        }
        pieces.push(&bytes[from..]);
        prop_assert_eq!(run(&pieces), whole);
    }

    #[test]
    fn encoders_never_panic_on_arbitrary_events(events in prop::collection::vec(arb_event(), 0..20)) {
        let mut o = openai::StreamEncoder::new("c", "m", 0, true);
        let mut a = anthropic::StreamEncoder::new("m", "m", 0);
        for e in &events {
            let _ = o.encode(e);
            let _ = a.encode(e);
        }
        let _ = o.finish(None);
        let _ = a.finish();
        // After the end nothing more is written.
        prop_assert!(o.finish(None).is_empty());
        prop_assert!(a.finish().is_empty());
        let late = o.encode(&StreamEvent::TextDelta { text: "late".into() });
        prop_assert!(late.is_empty());
    }
}
