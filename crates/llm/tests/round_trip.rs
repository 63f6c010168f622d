//! Round-trip properties over generated canonical values: `parse(render(x)) == x` for
//! requests and answers in each wire, across wires where both can say the same thing,
//! and for streams (encode, cut the SSE anywhere, parse, decode, gather).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use berth_llm::{
    ChatRequest, ChatResponse, FinishReason, Message, Part, Role, StreamEvent, ToolChoice, ToolDef,
    Usage, anthropic, openai,
};
use common::{
    Gathered, check_anthropic_sse, check_openai_sse, decode_anthropic, decode_openai, gather,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn text() -> impl Strategy<Value = String> {
    "\\PC{1,24}"
}

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_]{1,12}"
}

/// Tool arguments as a model writes them and as Anthropic's `input` serialises: a compact
/// JSON object with sorted keys.
fn arguments() -> impl Strategy<Value = String> {
    prop::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            any::<i32>().prop_map(|n| json!(n)),
            "\\PC{0,8}".prop_map(|s| json!(s)),
            any::<bool>().prop_map(|b| json!(b)),
            Just(json!([1, {"x": null}])),
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()).to_string())
}

fn image() -> impl Strategy<Value = Part> {
    prop_oneof![
        "[A-Za-z0-9+/]{4,16}".prop_map(|d| Part::Image {
            url: format!("data:image/png;base64,{d}")
        }),
        "[a-z]{1,8}".prop_map(|p| Part::Image {
            url: format!("https://example.com/{p}.jpg")
        }),
    ]
}

fn user_turn() -> impl Strategy<Value = Message> {
    prop::collection::vec(
        prop_oneof![3 => text().prop_map(Part::Text), 1 => image()],
        1..4,
    )
    .prop_map(|content| Message {
        role: Role::User,
        content,
    })
}

fn tool_call() -> impl Strategy<Value = Part> {
    (ident(), ident(), arguments()).prop_map(|(id, name, arguments)| Part::ToolCall {
        id: format!("call_{id}"),
        name,
        arguments,
    })
}

/// An assistant turn (texts, then calls, as both wires order them) and, when it called
/// tools, the turn of their results.
fn assistant_turn() -> impl Strategy<Value = Vec<Message>> {
    (
        prop::collection::vec(text().prop_map(Part::Text), 0..3),
        prop::collection::vec(tool_call(), 0..3),
        prop::collection::vec(("\\PC{0,16}", any::<bool>()), 3),
    )
        .prop_filter("a turn says something", |(t, c, _)| {
            !t.is_empty() || !c.is_empty()
        })
        .prop_map(|(texts, calls, results)| {
            let mut out = Vec::new();
            let ids: Vec<String> = calls
                .iter()
                .filter_map(|c| match c {
                    Part::ToolCall { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .collect();
            out.push(Message {
                role: Role::Assistant,
                content: [texts, calls].concat(),
            });
            if !ids.is_empty() {
                out.push(Message {
                    role: Role::Tool,
                    content: ids
                        .into_iter()
                        .zip(results)
                        .map(|(call_id, (content, is_error))| Part::ToolResult {
                            call_id,
                            content,
                            is_error,
                        })
                        .collect(),
                });
            }
            out
        })
}

fn conversation() -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec((user_turn(), prop::option::of(assistant_turn())), 1..4).prop_map(
        |rounds| {
            let mut out = Vec::new();
            for (user, assistant) in rounds {
                out.push(user);
                out.extend(assistant.into_iter().flatten());
            }
            out
        },
    )
}

fn tool_def() -> impl Strategy<Value = ToolDef> {
    (
        ident(),
        prop::option::of(text()),
        prop_oneof![
            Just(json!({"type": "object", "properties": {}})),
            Just(json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})),
        ],
    )
        .prop_map(|(name, description, parameters)| ToolDef { name, description, parameters })
}

fn request() -> impl Strategy<Value = ChatRequest> {
    (
        (ident(), prop::option::of("\\PC{0,40}"), conversation()),
        prop::collection::vec(tool_def(), 0..3),
        prop::option::of(prop_oneof![
            Just(ToolChoice::Auto),
            Just(ToolChoice::None),
            Just(ToolChoice::Required),
            ident().prop_map(ToolChoice::Tool),
        ]),
        (
            prop::option::of(1u32..200_000),
            // Short decimals, as people write them: JSON numbers of many digits may
            // read back one unit in the last place off without serde_json's
            // `float_roundtrip`, which is not what is tested here.
            prop::option::of((0u32..=200).prop_map(|n| f64::from(n) / 100.0)),
            prop::option::of((0u32..=100).prop_map(|n| f64::from(n) / 100.0)),
        ),
        (
            prop::collection::vec(text(), 0..3),
            any::<bool>(),
            prop::option::of(ident()),
        ),
    )
        .prop_map(
            |(
                (model, system, messages),
                tools,
                tool_choice,
                (max_tokens, temperature, top_p),
                (stop, stream, user),
            )| {
                ChatRequest {
                    model: format!("p/{model}"),
                    system,
                    messages,
                    tools,
                    tool_choice,
                    max_tokens,
                    temperature,
                    top_p,
                    stop,
                    stream,
                    include_usage: false,
                    user,
                }
            },
        )
}

/// What OpenAI cannot say: a tool result's error flag. And what its parser reads back:
/// usage is asked for exactly when streaming.
fn as_openai_sees_it(mut req: ChatRequest) -> ChatRequest {
    for m in &mut req.messages {
        for p in &mut m.content {
            if let Part::ToolResult { is_error, .. } = p {
                *is_error = false;
            }
        }
    }
    req.include_usage = req.stream;
    req
}

/// What Anthropic's parser reads back: the default answer limit, and usage always.
fn as_anthropic_sees_it(mut req: ChatRequest) -> ChatRequest {
    req.max_tokens = Some(req.max_tokens.unwrap_or(anthropic::DEFAULT_MAX_TOKENS));
    req.include_usage = true;
    req
}

fn usage() -> impl Strategy<Value = Usage> {
    (0u64..1_000_000, 0u64..1_000_000, 0u64..1_000_000).prop_map(|(a, b, o)| Usage {
        input_tokens: a.max(b),
        cached_input_tokens: a.min(b),
        output_tokens: o,
    })
}

fn finish() -> impl Strategy<Value = FinishReason> {
    prop_oneof![
        Just(FinishReason::Stop),
        Just(FinishReason::Length),
        Just(FinishReason::ToolCalls),
        Just(FinishReason::ContentFilter),
        Just(FinishReason::Other("pause_turn".into())),
    ]
}

/// An answer: texts and tool calls in any order, but never two texts side by side (a
/// stream cannot tell them apart from one).
fn response() -> impl Strategy<Value = ChatResponse> {
    (
        prop::collection::vec(prop_oneof![text().prop_map(Part::Text), tool_call()], 0..5),
        finish(),
        prop::option::of(usage()),
        ident(),
    )
        .prop_map(|(parts, finish, usage, id)| {
            let mut content: Vec<Part> = Vec::new();
            for p in parts {
                match (content.last_mut(), p) {
                    (Some(Part::Text(a)), Part::Text(b)) => a.push_str(&b),
                    (_, p) => content.push(p),
                }
            }
            ChatResponse {
                id,
                model: "m".into(),
                content,
                finish,
                usage,
            }
        })
}

/// The events an upstream might send for an answer, texts and arguments cut into pieces.
fn events_of(resp: &ChatResponse, cuts: &[usize]) -> Vec<StreamEvent> {
    let mut cut = cuts.iter().cycle();
    let mut pieces = |s: &str| -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        let at = cut.next().copied().unwrap_or(0) % (chars.len() + 1);
        [
            chars[..at].iter().collect::<String>(),
            chars[at..].iter().collect(),
        ]
        .into_iter()
        .filter(|p: &String| !p.is_empty())
        .collect()
    };
    let mut out = vec![StreamEvent::Start {
        id: "up".into(),
        model: "m".into(),
    }];
    let mut index = 0;
    for p in &resp.content {
        match p {
            Part::Text(t) => out.extend(
                pieces(t)
                    .into_iter()
                    .map(|text| StreamEvent::TextDelta { text }),
            ),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => {
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id: id.clone(),
                    name: name.clone(),
                });
                out.extend(
                    pieces(arguments)
                        .into_iter()
                        .map(|arguments| StreamEvent::ToolCallDelta { index, arguments }),
                );
                index += 1;
            }
            _ => {}
        }
    }
    out.push(StreamEvent::Finish {
        reason: resp.finish.clone(),
    });
    if let Some(usage) = resp.usage {
        out.push(StreamEvent::Usage { usage });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn openai_requests_round_trip(req in request()) {
        let req = as_openai_sees_it(req);
        prop_assert_eq!(openai::parse_request(&openai::render_request(&req)).unwrap(), req.clone());
        let native = openai::render_request_for(&req, openai::Dialect::OpenAi);
        prop_assert_eq!(openai::parse_request(&native).unwrap(), req);
    }

    #[test]
    fn anthropic_requests_round_trip(req in request()) {
        let req = as_anthropic_sees_it(req);
        prop_assert_eq!(anthropic::parse_request(&anthropic::render_request(&req)).unwrap(), req);
    }

    #[test]
    fn requests_cross_both_wires(req in request()) {
        // OpenAI client → Anthropic upstream, and back: nothing of the conversation is lost.
        let req = as_anthropic_sees_it(as_openai_sees_it(req));
        let via = anthropic::parse_request(&anthropic::render_request(&req)).unwrap();
        prop_assert_eq!(&via, &req);
        let back = openai::parse_request(&openai::render_request(&via)).unwrap();
        prop_assert_eq!(back, as_openai_sees_it(req));
    }

    #[test]
    fn anthropic_responses_round_trip(mut resp in response(), u in usage()) {
        // Anthropic answers always carry usage.
        resp.usage = Some(resp.usage.unwrap_or(u));
        prop_assert_eq!(anthropic::parse_response(&anthropic::render_response(&resp)).unwrap(), resp);
    }

    #[test]
    fn openai_responses_round_trip(resp in response()) {
        // One `content` string per answer: texts come back joined, ahead of the calls.
        let back = openai::parse_response(&openai::render_response(&resp, 0)).unwrap();
        let text = resp.text();
        let mut want: Vec<Part> = if text.is_empty() { vec![] } else { vec![Part::Text(text)] };
        want.extend(resp.content.iter().filter(|p| matches!(p, Part::ToolCall { .. })).cloned());
        prop_assert_eq!(back.content, want);
        prop_assert_eq!(back.finish, resp.finish);
        prop_assert_eq!(back.usage, resp.usage);
    }

    #[test]
    fn streams_round_trip_through_each_encoder(
        resp in response(),
        cuts in prop::collection::vec(0usize..10_000, 0..6),
        u in usage(),
    ) {
        let events = events_of(&resp, &cuts);
        let want = Gathered { parts: resp.content.clone(), finish: Some(resp.finish.clone()), usage: resp.usage };

        let mut o = openai::StreamEncoder::new("chatcmpl-x", "m", 0, true);
        let mut sse: String = events.iter().flat_map(|e| o.encode(e)).collect();
        sse.extend(o.finish(None));
        prop_assert_eq!(check_openai_sse(&sse), true);
        prop_assert_eq!(gather(&decode_openai(&sse, &cuts)), want.clone());

        let mut a = anthropic::StreamEncoder::new("msg_x", "m", 7);
        let mut sse: String = events.iter().flat_map(|e| a.encode(e)).collect();
        sse.extend(a.finish());
        check_anthropic_sse(&sse);
        // Anthropic streams always end with usage: the estimate when none was reported.
        let want = Gathered {
            usage: Some(resp.usage.unwrap_or(Usage { input_tokens: 7, ..Usage::default() })),
            ..want
        };
        prop_assert_eq!(gather(&decode_anthropic(&sse, &cuts)), want);

        // A usage report part-way is replaced by the final one, never added to it.
        let mut with_early = events.clone();
        with_early.insert(1, StreamEvent::Usage { usage: u });
        let mut a = anthropic::StreamEncoder::new("msg_x", "m", 7);
        let mut sse: String = with_early.iter().flat_map(|e| a.encode(e)).collect();
        sse.extend(a.finish());
        let final_usage = resp.usage.unwrap_or(u);
        prop_assert_eq!(gather(&decode_anthropic(&sse, &cuts)).usage, Some(final_usage));
    }
}
