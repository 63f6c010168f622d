//! Keeping an injected provider key out of everything that comes back from the provider:
//! error messages (the key whole, its head and tail, and anything shaped like a key),
//! successful answers (every string of the JSON body) and streamed answers (text and tool
//! arguments, where the key may be split across events). All cuts fall on char boundaries,
//! so a key or text of any script is safe.

use berth_llm::StreamEvent;
use serde_json::Value;

/// Error bodies longer than this are cut: they are for people, not for parsing.
pub(crate) const MAX_ERROR_MESSAGE: usize = 500;

const REDACTED: &str = "[redacted]";

/// The first `n` chars of `s` (all of it when shorter).
fn head_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The last `n` chars of `s` (all of it when shorter).
fn tail_chars(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    match s.char_indices().nth(count.saturating_sub(n)) {
        Some((i, _)) => &s[i..],
        None => "",
    }
}

/// Removes the provider key (and anything shaped like a key) from upstream error text,
/// and cuts it to [`MAX_ERROR_MESSAGE`] bytes.
pub(crate) fn scrub(text: &str, key: Option<&str>) -> String {
    let mut out = text.to_owned();
    if let Some(k) = key.filter(|k| k.chars().count() >= 4) {
        out = out.replace(k, REDACTED);
        // Providers often echo a key partially ("sk-abc...xyz"): drop its head and tail too.
        if k.chars().count() > 8 {
            out = out.replace(tail_chars(k, 6), REDACTED);
            out = out.replace(head_chars(k, 8), REDACTED);
        }
    }
    let masked: Vec<String> = out
        .split(' ')
        .map(|w| {
            let looks_like_key =
                (w.starts_with("sk-") || w.starts_with("sk_") || w.starts_with("key-"))
                    && w.len() > 12;
            if looks_like_key {
                REDACTED.to_owned()
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

/// A key worth looking for: short ones would match ordinary text.
fn usable(key: Option<&str>) -> Option<&str> {
    key.filter(|k| k.chars().count() >= 4)
}

/// Replaces every occurrence of `key` in every string (and object key) of a successful
/// answer's body. Strings are compared decoded, so an escaped echo (`\u0073k-…`) is found
/// too.
pub(crate) fn scrub_value(value: &mut Value, key: Option<&str>) {
    let Some(key) = usable(key) else {
        return;
    };
    fn walk(v: &mut Value, key: &str) {
        match v {
            Value::String(s) if s.contains(key) => *s = s.replace(key, REDACTED),
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, key)),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains(key)) {
                    let old = std::mem::take(map);
                    for (k, mut v) in old {
                        walk(&mut v, key);
                        map.insert(k.replace(key, REDACTED), v);
                    }
                } else {
                    map.values_mut().for_each(|i| walk(i, key));
                }
            }
            _ => {}
        }
    }
    walk(value, key);
}

/// Which run of streamed text a held-back tail belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Text,
    ToolArguments(u32),
}

/// Scrubs a streamed answer of `key` as its events pass. Text and tool arguments arrive in
/// pieces, and a key may be cut between two of them, so the newest chars that could still
/// begin the key (fewer than its length) are held back until the next piece of the same
/// run, or until any other event or the end, which release them.
pub(crate) struct StreamScrub {
    key: Option<String>,
    held: Option<(Channel, String)>,
}

impl StreamScrub {
    pub(crate) fn new(key: Option<&str>) -> Self {
        StreamScrub {
            key: usable(key).map(str::to_owned),
            held: None,
        }
    }

    /// The events to pass on for `event`.
    pub(crate) fn push(&mut self, event: StreamEvent) -> Vec<StreamEvent> {
        let Some(key) = self.key.clone() else {
            return vec![event];
        };
        let (channel, piece) = match event {
            StreamEvent::TextDelta { text } => (Channel::Text, text),
            StreamEvent::ToolCallDelta { index, arguments } => {
                (Channel::ToolArguments(index), arguments)
            }
            other => {
                let mut out = self.finish();
                out.push(other);
                return out;
            }
        };
        let mut out = Vec::new();
        let mut text = match self.held.take() {
            Some((c, held)) if c == channel => held,
            Some((c, held)) => {
                out.extend(release(c, held.replace(&key, REDACTED)));
                String::new()
            }
            None => String::new(),
        };
        text.push_str(&piece);
        let text = text.replace(&key, REDACTED);
        let keep = held_back(&text, &key);
        let (now, later) = text.split_at(text.len() - keep);
        out.extend(release(channel, now.to_owned()));
        if !later.is_empty() {
            self.held = Some((channel, later.to_owned()));
        }
        out
    }

    /// What is still held, at the end of the stream (or before another kind of event).
    pub(crate) fn finish(&mut self) -> Vec<StreamEvent> {
        match (self.held.take(), &self.key) {
            (Some((c, held)), Some(key)) => release(c, held.replace(key.as_str(), REDACTED)),
            _ => Vec::new(),
        }
    }
}

fn release(channel: Channel, text: String) -> Vec<StreamEvent> {
    if text.is_empty() {
        return Vec::new();
    }
    vec![match channel {
        Channel::Text => StreamEvent::TextDelta { text },
        Channel::ToolArguments(index) => StreamEvent::ToolCallDelta {
            index,
            arguments: text,
        },
    }]
}

/// How many bytes at the end of `text` must wait: the longest suffix that is a proper
/// prefix of `key` (it may be the start of the key, completed by the next piece).
fn held_back(text: &str, key: &str) -> usize {
    let mut best = 0;
    for (i, _) in key.char_indices().skip(1) {
        if text.ends_with(&key[..i]) {
            best = i;
        }
    }
    best
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

    #[test]
    fn scrub_is_safe_with_keys_and_text_of_any_script() {
        // Multi-byte chars at the places a byte slice would have cut.
        let key = "ключ-секрет-🔑-0123456789-ß";
        let out = scrub(
            &format!("bad key {key}; head ключ-сек, tail x6789-ß"),
            Some(key),
        );
        assert!(!out.contains("0123456789"), "{out}");
        assert!(!out.contains("ключ-сек"), "{out}");
        assert!(!out.contains("6789-ß"), "{out}");
        assert!(scrub(&"é".repeat(600), Some("ééééééééééé")).len() <= MAX_ERROR_MESSAGE + 3);
        assert_eq!(scrub("short", Some("é")), "short");
    }

    #[test]
    fn successful_bodies_lose_every_copy_of_the_key() {
        let key = "sk-tenant-κλειδί-0123456789";
        let mut v: Value = serde_json::from_str(&format!(
            r#"{{"choices":[{{"message":{{"content":"your key is {key}!","tool_calls":[{{"function":{{"arguments":"{{\"k\":\"{key}\"}}"}}}}]}}}}],
                "{key}":1,"n":[1,2,"\u0073k-tenant-κλειδί-0123456789"]}}"#
        ))
        .unwrap();
        scrub_value(&mut v, Some(key));
        let text = v.to_string();
        assert!(!text.contains("0123456789"), "{text}");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "your key is [redacted]!"
        );
        assert_eq!(v["[redacted]"], 1);
    }

    fn collect(events: &[StreamEvent]) -> (String, String) {
        let (mut text, mut args) = (String::new(), String::new());
        for e in events {
            match e {
                StreamEvent::TextDelta { text: t } => text.push_str(t),
                StreamEvent::ToolCallDelta { arguments, .. } => args.push_str(arguments),
                _ => {}
            }
        }
        (text, args)
    }

    #[test]
    fn a_key_cut_between_stream_events_is_still_found() {
        let key = "sk-ünïcode-KEY-0123456789";
        let said = format!("a {key} b {key}");
        for size in [1, 2, 3, 7, 100] {
            let mut s = StreamScrub::new(Some(key));
            let mut out = Vec::new();
            let chars: Vec<char> = said.chars().collect();
            for piece in chars.chunks(size) {
                out.extend(s.push(StreamEvent::TextDelta {
                    text: piece.iter().collect(),
                }));
            }
            // Tool arguments are a run of their own; another event releases what is held.
            out.extend(s.push(StreamEvent::ToolCallDelta {
                index: 0,
                arguments: format!("{{\"k\":\"{}", &key[..5]),
            }));
            out.extend(s.push(StreamEvent::ToolCallDelta {
                index: 0,
                arguments: format!("{}\"}}", &key[5..]),
            }));
            out.extend(s.push(StreamEvent::Finish {
                reason: berth_llm::FinishReason::Stop,
            }));
            out.extend(s.finish());
            let (text, args) = collect(&out);
            assert_eq!(text, "a [redacted] b [redacted]", "pieces of {size}");
            assert_eq!(args, "{\"k\":\"[redacted]\"}", "pieces of {size}");
            assert!(matches!(out.last(), Some(StreamEvent::Finish { .. })));
        }
        // Text that only looks like the key's start is released at the end, whole.
        let mut s = StreamScrub::new(Some(key));
        let mut out = s.push(StreamEvent::TextDelta {
            text: "ends with sk-ün".into(),
        });
        out.extend(s.finish());
        assert_eq!(collect(&out).0, "ends with sk-ün");
        // No key: events pass untouched.
        let mut s = StreamScrub::new(None);
        assert_eq!(
            collect(&s.push(StreamEvent::TextDelta { text: "x".into() })).0,
            "x"
        );
    }
}
