//! An incremental Server-Sent Events parser: bytes in (split anywhere), events out.

use crate::error::LlmError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Largest single event accepted; beyond it the stream is treated as broken.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    pending_bytes: usize,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LlmError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(ev) = self.line(&line)? {
                out.push(ev);
            }
        }
        self.buf.drain(..start);
        if self.buf.len() + self.pending_bytes > MAX_EVENT_BYTES {
            return Err(LlmError::EventTooLarge(MAX_EVENT_BYTES));
        }
        Ok(out)
    }

    /// Ends the stream: a last event without its blank line still counts.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, LlmError> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line =
                String::from_utf8_lossy(rest.strip_suffix(b"\r").unwrap_or(&rest)).into_owned();
            if let Some(ev) = self.line(&line)? {
                return Ok(Some(ev));
            }
        }
        Ok(self.dispatch())
    }

    fn line(&mut self, line: &str) -> Result<Option<SseEvent>, LlmError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                self.pending_bytes += value.len();
                if self.pending_bytes > MAX_EVENT_BYTES {
                    return Err(LlmError::EventTooLarge(MAX_EVENT_BYTES));
                }
                self.data.push(value.to_owned());
            }
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if self.data.is_empty() {
            return None;
        }
        self.pending_bytes = 0;
        Some(SseEvent {
            event: event.unwrap_or_else(|| "message".to_owned()),
            data: std::mem::take(&mut self.data).join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "event: message_start\ndata: {\"a\":1}\n\n: comment\r\ndata: line1\r\ndata: line2\r\n\r\ndata: [DONE]\n\nevent: x\ndata: é\n\n";

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c).unwrap());
        }
        out.extend(p.finish().unwrap());
        out
    }

    #[test]
    fn parses_names_multiline_crlf_and_comments() {
        let evs = parse_all(&[SAMPLE.as_bytes()]);
        assert_eq!(evs.len(), 4);
        assert_eq!(
            evs[0],
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into()
            }
        );
        assert_eq!(evs[1].data, "line1\nline2");
        assert_eq!(evs[1].event, "message");
        assert_eq!(evs[2].data, "[DONE]");
        assert_eq!(evs[3].data, "é");
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let whole = parse_all(&[SAMPLE.as_bytes()]);
        let bytes = SAMPLE.as_bytes();
        for i in 0..bytes.len() {
            assert_eq!(
                parse_all(&[&bytes[..i], &bytes[i..]]),
                whole,
                "split at {i}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_all(&singles), whole);
    }

    #[test]
    fn last_event_without_blank_line() {
        assert_eq!(
            parse_all(&[b"data: tail"]),
            vec![SseEvent {
                event: "message".into(),
                data: "tail".into()
            }]
        );
    }

    #[test]
    fn oversize_events_are_refused() {
        let mut p = SseParser::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 10];
        assert!(p.feed(b"data: ").is_ok());
        assert!(matches!(p.feed(&big), Err(LlmError::EventTooLarge(_))));
    }
}
