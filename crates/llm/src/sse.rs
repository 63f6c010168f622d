//! An incremental Server-Sent Events parser: bytes in (split anywhere), events out.
//!
//! It follows the WHATWG event-stream rules that matter to LLM streams: lines end with
//! CRLF, LF or CR; `:` starts a comment; `data` lines of one event are joined with `\n`;
//! a blank line dispatches; an event without data is dropped; a leading BOM is skipped.
//! `id` and `retry` are ignored, because the gateway never resumes a stream.

use crate::error::LlmError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Largest single event accepted; beyond it the stream is treated as broken, so that an
/// upstream that never ends a line cannot make the gateway buffer without bound.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

pub struct SseParser {
    limit: usize,
    /// The line being received, not yet terminated. Bytes, not text: a chunk may end in
    /// the middle of a UTF-8 sequence.
    line: Vec<u8>,
    /// The last byte was a CR: an LF right after it belongs to the same line ending.
    after_cr: bool,
    /// No line has been read yet, so a BOM may still be ahead.
    first_line: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// An event overflowed: what follows cannot be framed reliably.
    failed: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser refusing events larger than `limit` bytes (data plus the open line).
    pub fn with_limit(limit: usize) -> Self {
        SseParser {
            limit,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            event: None,
            data: String::new(),
            has_data: false,
            failed: false,
        }
    }

    /// Feeds a chunk; returns the events it completed. After an error every later call
    /// fails too.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LlmError> {
        if self.failed {
            return Err(LlmError::EventTooLarge(self.limit));
        }
        let mut out = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if let Some((b'\n', tail)) = rest.split_first() {
                    rest = tail;
                    continue;
                }
            }
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(pos) => {
                    let (head, tail) = rest.split_at(pos);
                    self.append(head)?;
                    let Some((terminator, tail)) = tail.split_first() else {
                        break;
                    };
                    self.after_cr = *terminator == b'\r';
                    rest = tail;
                    let mut line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.process(&line)? {
                        out.push(ev);
                    }
                    // Keep the allocation for the next line.
                    line.clear();
                    self.line = line;
                }
                None => {
                    self.append(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(out)
    }

    /// Ends the stream: a last event without its blank line still counts. The parser is
    /// then ready for a new stream.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, LlmError> {
        if self.failed {
            return Err(LlmError::EventTooLarge(self.limit));
        }
        self.after_cr = false;
        let line = std::mem::take(&mut self.line);
        let mut ev = None;
        if !line.is_empty() {
            ev = self.process(&line)?;
        }
        if ev.is_none() {
            ev = self.dispatch();
        }
        self.first_line = true;
        Ok(ev)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), LlmError> {
        if self.line.len() + bytes.len() + self.data.len() > self.limit {
            return Err(self.fail());
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn fail(&mut self) -> LlmError {
        self.failed = true;
        self.line = Vec::new();
        self.data = String::new();
        LlmError::EventTooLarge(self.limit)
    }

    fn process(&mut self, mut line: &[u8]) -> Result<Option<SseEvent>, LlmError> {
        if self.first_line {
            self.first_line = false;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.first() == Some(&b':') {
            return Ok(None);
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(pos) => {
                let (name, value) = line.split_at(pos);
                let value = value.get(1..).unwrap_or_default();
                (name, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.has_data = true;
                self.data.push_str(&String::from_utf8_lossy(value));
                if self.data.len() > self.limit {
                    return Err(self.fail());
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            event: event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_owned()),
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names, comments, CRLF, a bare CR, multi-line data, an empty data line, an event
    /// without data, and a two-byte character (which a split can cut in half).
    const SAMPLE: &str = concat!(
        "event: message_start\ndata: {\"a\":1}\n\n",
        ": keep-alive comment\r\n",
        "data: line1\r\ndata: line2\r\n\r\n",
        "data: [DONE]\n\n",
        "event: x\rdata: é\r\r",
        "event: lonely\n\n",
        "data\ndata:\n\n",
        "id: 7\nretry: 10\ndata:no-space\n\n",
    );

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c).unwrap());
        }
        out.extend(p.finish().unwrap());
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn parses_names_multiline_crlf_cr_and_comments() {
        let evs = parse_all(&[SAMPLE.as_bytes()]);
        assert_eq!(
            evs,
            vec![
                ev("message_start", "{\"a\":1}"),
                ev("message", "line1\nline2"),
                ev("message", "[DONE]"),
                ev("x", "é"),
                // `event: lonely` has no data and is dropped, and its name does not leak
                // into the next event.
                ev("message", "\n"),
                ev("message", "no-space"),
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let whole = parse_all(&[SAMPLE.as_bytes()]);
        let bytes = SAMPLE.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                assert_eq!(
                    parse_all(&[&bytes[..i], &bytes[i..j], &bytes[j..]]),
                    whole,
                    "split at {i} and {j}"
                );
            }
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_all(&singles), whole);
    }

    #[test]
    fn last_event_without_blank_line() {
        assert_eq!(parse_all(&[b"data: tail"]), vec![ev("message", "tail")]);
        assert_eq!(parse_all(&[b"data: tail\r"]), vec![ev("message", "tail")]);
        assert_eq!(
            parse_all(&[b"data: a\ndata: b\n"]),
            vec![ev("message", "a\nb")]
        );
        assert_eq!(parse_all(&[b": only a comment"]), vec![]);
        assert_eq!(parse_all(&[]), vec![]);
    }

    #[test]
    fn a_leading_bom_is_skipped_even_when_split() {
        let text = b"\xEF\xBB\xBFdata: x\n\n";
        for i in 0..text.len() {
            assert_eq!(
                parse_all(&[&text[..i], &text[i..]]),
                vec![ev("message", "x")]
            );
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(
            parse_all(&[b"data: \xFF\xFEok\n\n"]),
            vec![ev("message", "\u{FFFD}\u{FFFD}ok")]
        );
    }

    #[test]
    fn oversize_events_are_refused_and_stay_refused() {
        let mut p = SseParser::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 10];
        assert!(p.feed(b"data: ").is_ok());
        assert!(matches!(p.feed(&big), Err(LlmError::EventTooLarge(_))));
        assert!(matches!(p.feed(b"\n\n"), Err(LlmError::EventTooLarge(_))));
        assert!(p.finish().is_err());
    }

    #[test]
    fn the_limit_counts_the_whole_event_not_one_line() {
        let mut p = SseParser::with_limit(100);
        // Many short lines of one event add up.
        let line = b"data: 0123456789\n";
        let mut failed = false;
        for _ in 0..20 {
            if p.feed(line).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
        // Empty data lines add a newline each, so they are bounded too.
        let mut p = SseParser::with_limit(100);
        assert!(p.feed(&b"data\n".repeat(200)).is_err());
        // Events under the limit pass however many there are.
        let mut p = SseParser::with_limit(100);
        let many = b"data: 0123456789\n\n".repeat(1000);
        assert_eq!(p.feed(&many).unwrap().len(), 1000);
        // A long comment is still a line that must end somewhere.
        let mut p = SseParser::with_limit(100);
        assert!(p.feed(&[b':'; 200]).is_err());
    }
}
