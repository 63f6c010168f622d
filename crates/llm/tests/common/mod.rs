//! Helpers shared by the integration tests: decode SSE text of either wire back into
//! canonical events, gather events into an answer, and check that an encoder's output is
//! well-formed for its wire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
#![allow(dead_code)] // each test file uses some of these

use berth_llm::sse::{SseEvent, SseParser};
use berth_llm::{FinishReason, Part, StreamEvent, Usage, anthropic, openai};
use serde_json::Value;
use std::collections::BTreeMap;

/// Parses SSE text fed in the given pieces (cut at these byte offsets).
pub fn sse_events(text: &str, cuts: &[usize]) -> Vec<SseEvent> {
    let bytes = text.as_bytes();
    let mut p = SseParser::default();
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts {
        out.extend(p.feed(&bytes[at..c]).unwrap());
        at = c;
    }
    out.extend(p.feed(&bytes[at..]).unwrap());
    out.extend(p.finish().unwrap());
    out
}

pub fn decode_openai(text: &str, cuts: &[usize]) -> Vec<StreamEvent> {
    sse_events(text, cuts)
        .iter()
        .flat_map(|e| openai::decode_chunk(&e.data).unwrap())
        .collect()
}

pub fn decode_anthropic(text: &str, cuts: &[usize]) -> Vec<StreamEvent> {
    let mut d = anthropic::StreamDecoder::default();
    sse_events(text, cuts)
        .iter()
        .flat_map(|e| d.decode(&e.event, &e.data).unwrap())
        .collect()
}

/// What a client would assemble from a stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gathered {
    pub parts: Vec<Part>,
    pub finish: Option<FinishReason>,
    /// The last report: usage is cumulative.
    pub usage: Option<Usage>,
}

pub fn gather(events: &[StreamEvent]) -> Gathered {
    let mut g = Gathered::default();
    let mut calls: BTreeMap<u32, usize> = BTreeMap::new();
    for e in events {
        match e {
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta { text } => match g.parts.last_mut() {
                Some(Part::Text(t)) => t.push_str(text),
                _ => g.parts.push(Part::Text(text.clone())),
            },
            StreamEvent::ToolCallStart { index, id, name } => {
                calls.entry(*index).or_insert_with(|| {
                    g.parts.push(Part::ToolCall {
                        id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                    });
                    g.parts.len() - 1
                });
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let at = calls[index];
                if let Part::ToolCall { arguments: a, .. } = &mut g.parts[at] {
                    a.push_str(arguments);
                }
            }
            StreamEvent::Finish { reason } => {
                g.finish.get_or_insert_with(|| reason.clone());
            }
            StreamEvent::Usage { usage } => g.usage = Some(*usage),
        }
    }
    g
}

/// Checks an Anthropic stream's framing: `message_start` first; blocks numbered from 0
/// and opened one at a time; each delta in a started block of its kind; every block
/// stopped; `message_delta` then `message_stop` last.
pub fn check_anthropic_sse(text: &str) {
    let events = sse_events(text, &[]);
    assert!(!events.is_empty());
    assert_eq!(events[0].event, "message_start", "{text}");
    let mut kinds: Vec<String> = Vec::new();
    let mut open: Option<u64> = None;
    let n = events.len();
    for (i, e) in events.iter().enumerate() {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["type"], e.event.as_str(), "event name and type agree");
        match e.event.as_str() {
            "message_start" => assert_eq!(i, 0),
            "content_block_start" => {
                assert_eq!(open, None, "a block is still open: {text}");
                let index = v["index"].as_u64().unwrap();
                assert_eq!(index, kinds.len() as u64, "blocks numbered in order");
                kinds.push(v["content_block"]["type"].as_str().unwrap().to_owned());
                open = Some(index);
            }
            "content_block_delta" => {
                let index = v["index"].as_u64().unwrap() as usize;
                let kind = &kinds[index];
                match v["delta"]["type"].as_str().unwrap() {
                    "text_delta" => {
                        assert_eq!(kind, "text");
                        assert_eq!(open, Some(index as u64), "text goes to the open block");
                    }
                    "input_json_delta" => assert_eq!(kind, "tool_use"),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(open, v["index"].as_u64(), "only the open block stops");
                open = None;
            }
            "message_delta" => {
                assert_eq!(open, None);
                assert_eq!(i, n - 2, "message_delta comes just before the end");
                assert!(v["usage"]["output_tokens"].is_u64());
            }
            "message_stop" => assert_eq!(i, n - 1),
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(events[n - 1].event, "message_stop");
}

/// Checks an OpenAI stream's framing: JSON chunks, one finish reason at most, a tool
/// call's first chunk naming it, and `[DONE]` last. Returns whether a usage chunk came.
pub fn check_openai_sse(text: &str) -> bool {
    let events = sse_events(text, &[]);
    let n = events.len();
    assert_eq!(events[n - 1].data, "[DONE]", "{text}");
    let mut finishes = 0;
    let mut usage_chunk = false;
    let mut named: Vec<u64> = Vec::new();
    for e in &events[..n - 1] {
        assert_eq!(e.event, "message");
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        let choices = v["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert!(!usage_chunk, "one usage chunk");
            usage_chunk = true;
            // Null when nothing was reported: the wire's type allows it, and zeros
            // would be a lie.
            assert!(v["usage"].is_object() || v["usage"].is_null());
            continue;
        }
        assert!(!usage_chunk, "the usage chunk is the last before [DONE]");
        let c = &choices[0];
        if !c["finish_reason"].is_null() {
            finishes += 1;
        }
        for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap();
            if call["id"].is_string() {
                assert!(!named.contains(&index), "a call is named once");
                assert!(call["function"]["name"].is_string());
                named.push(index);
            }
        }
    }
    assert!(finishes <= 1);
    usage_chunk
}
