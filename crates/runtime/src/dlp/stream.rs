//! Data-loss rules on text that arrives in pieces (a streamed model answer): the newest
//! bytes are held back and older text is passed on only where it can be cut without
//! changing what screening finds, so a stream is screened as its whole text would be.

use super::Hit;
use super::{
    Dlp, INLINE_BYTES, OutOfTime, SCREEN_BUDGET, TIMEOUT_DETECTOR, Verdict, warn_out_of_time,
};
use berth_core::policy::DlpAction;
use std::time::Instant;

/// What a [`StreamScreen`] lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// Text to pass on now (possibly empty, possibly redacted).
    Pass(String),
    /// The stream must stop: these detectors matched under `block`.
    Blocked(Vec<String>),
}

/// Applies one action to text that arrives in pieces (a streamed model answer), with the
/// same result as applying it to the whole text, for matches up to [`StreamScreen::HOLD`]
/// bytes long. The newest `HOLD` bytes are held back; older text is passed on once it can
/// be cut at whitespace outside every match, so no match is ever split between what was
/// passed on and what is still to come.
pub struct StreamScreen {
    dlp: std::sync::Arc<Dlp>,
    action: DlpAction,
    held: String,
    /// The held text is scanned for a cut again only once it reaches this length: after a
    /// scan that found no place to cut, the next waits until the text grew by a quarter
    /// (at least `HOLD`), so a long run of text without whitespace, arriving in tiny pieces,
    /// costs a linear number of scanned bytes, not a quadratic one.
    scan_at: usize,
    /// Detectors that redacted something so far, sorted, each once.
    pub redacted: Vec<String>,
}

/// Runs `f`, which may take a while (screening a large text), without holding up the other
/// tasks of this async worker: on a multi-threaded runtime they move to another thread
/// for the time being (`block_in_place`); elsewhere `f` simply runs.
fn off_the_async_workers<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl StreamScreen {
    /// Bytes held back behind the newest piece: longer than any built-in detector's match.
    pub const HOLD: usize = 256;
    /// Held text without whitespace beyond this is passed on whole (a blob, not prose).
    const MAX_HELD: usize = 16 * 1024;
    /// Cuts tried (each further back) before the held text waits for more.
    const CUT_TRIES: usize = 4;

    pub fn new(dlp: std::sync::Arc<Dlp>, action: DlpAction) -> StreamScreen {
        StreamScreen {
            dlp,
            action,
            held: String::new(),
            scan_at: 0,
            redacted: Vec::new(),
        }
    }

    /// Takes the next piece; answers what may be passed on now.
    pub fn push(&mut self, piece: &str) -> Screened {
        self.held.push_str(piece);
        if self.held.len() < self.scan_at {
            return Screened::Pass(String::new());
        }
        let screen = |this: &mut Self| match this.cut() {
            Ok(cut) => this.release(cut),
            Err(OutOfTime) => {
                warn_out_of_time(this.held.len());
                Screened::Blocked(vec![TIMEOUT_DETECTOR.to_owned()])
            }
        };
        if self.held.len() > INLINE_BYTES {
            off_the_async_workers(|| screen(self))
        } else {
            screen(self)
        }
    }

    /// The end of the text (or a point where text must not wait, such as a tool call
    /// starting): passes on everything held.
    pub fn finish(&mut self) -> Screened {
        let all = self.held.len();
        if all > INLINE_BYTES {
            off_the_async_workers(|| self.release(all))
        } else {
            self.release(all)
        }
    }

    /// How much of the held text can go: at most all but the newest `HOLD` bytes, then back
    /// to before any match that crosses the cut, then back to just after whitespace, and
    /// only where screening the two sides apart gives what screening them together gives.
    fn cut(&mut self) -> Result<usize, OutOfTime> {
        let len = self.held.len();
        if len <= Self::HOLD {
            return Ok(0);
        }
        // Every candidate, checked or not: cutting through one (a number that fails its
        // checksum as a whole, say) could leave a piece that passes it alone.
        let deadline = Instant::now() + SCREEN_BUDGET;
        let hits = self.dlp.matches_until(&self.held, Some(deadline), false)?;
        let mut cut = len - Self::HOLD;
        while !self.held.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut whole = None;
        let mut tries = 0;
        loop {
            cut = self.clear_of(&hits, cut);
            if cut == 0 {
                break;
            }
            // Candidates are found one detector at a time and redaction repeats over the
            // text it changed, so a cut clear of every candidate can still screen apart
            // differently from together (a phone number masked inside a card number that
            // the whole text masks entire). A cut is taken only where the two halves give
            // exactly what the held text gives whole; otherwise the one before is tried.
            let together = match &whole {
                Some(w) => w,
                None => whole.insert(self.dlp.redacted_until(&self.held, deadline)?),
            };
            let apart = self.dlp.redacted_until(&self.held[..cut], deadline)?
                + &self.dlp.redacted_until(&self.held[cut..], deadline)?;
            if apart == *together {
                break;
            }
            tries += 1;
            if tries == Self::CUT_TRIES {
                cut = 0;
                break;
            }
            // Back onto the whitespace before the cut: the next cut is before it.
            cut -= 1;
            while !self.held.is_char_boundary(cut) {
                cut -= 1;
            }
        }
        if cut == 0 && len > Self::MAX_HELD {
            return Ok(len);
        }
        self.scan_at = if cut == 0 {
            len + (len / 4).max(Self::HOLD)
        } else {
            0
        };
        Ok(cut)
    }

    /// `cut`, moved back to before any candidate that crosses it, then back to just after
    /// whitespace, until both hold (0: no such place).
    fn clear_of(&self, hits: &[Hit], mut cut: usize) -> usize {
        loop {
            let before = cut;
            if let Some(h) = hits.iter().find(|h| h.start < cut && cut < h.end) {
                cut = h.start;
            }
            cut = match self.held[..cut]
                .char_indices()
                .rev()
                .find(|(_, c)| c.is_whitespace())
            {
                Some((i, c)) => i + c.len_utf8(),
                None => 0,
            };
            if cut == before {
                return cut;
            }
        }
    }

    fn release(&mut self, cut: usize) -> Screened {
        if cut == 0 {
            return Screened::Pass(String::new());
        }
        self.scan_at = 0;
        let out: String = self.held.drain(..cut).collect();
        match self.dlp.apply(&out, self.action) {
            Verdict::Clean(text) => Screened::Pass(text),
            Verdict::Redacted { text, detectors } => {
                self.redacted.extend(detectors);
                self.redacted.sort();
                self.redacted.dedup();
                Screened::Pass(text)
            }
            Verdict::Blocked { detectors } => Screened::Blocked(detectors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::policy::{CustomDetector, DlpPolicy};

    fn dlp(detect: &[&str]) -> Dlp {
        Dlp::from_policy(&DlpPolicy {
            detect: detect.iter().map(|s| s.to_string()).collect(),
            custom: vec![CustomDetector {
                name: "ticket".into(),
                regex: "TCK-[0-9]{6}".into(),
            }],
            on_tool_args: DlpAction::Block,
            on_tool_results: DlpAction::Redact,
            on_llm_output: DlpAction::Redact,
        })
    }

    /// Feeds `text` in pieces of `size` bytes (at char boundaries) and joins what passes.
    fn streamed(d: &std::sync::Arc<Dlp>, action: DlpAction, text: &str, size: usize) -> Screened {
        let mut screen = StreamScreen::new(d.clone(), action);
        let mut out = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut n = size.min(rest.len());
            while !rest.is_char_boundary(n) {
                n += 1;
            }
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            match screen.push(piece) {
                Screened::Pass(t) => out.push_str(&t),
                blocked => return blocked,
            }
        }
        match screen.finish() {
            Screened::Pass(t) => out.push_str(&t),
            blocked => return blocked,
        }
        Screened::Pass(out)
    }

    #[test]
    fn a_streamed_text_is_screened_as_if_whole_however_it_is_cut() {
        let d = std::sync::Arc::new(dlp(&[
            "email",
            "phone",
            "credit_card",
            "us_ssn",
            "secret_token",
        ]));
        let filler = "lorem ipsum dolor sit amet, consectetur adipiscing élit. ".repeat(12);
        let text = format!(
            "{filler}write to jane.doe@example.com or call +1 (415) 555-0100, card 4111 1111 1111 1111.\n\
             {filler}ssn 123-45-6789 and key sk-live-0123456789abcdefABCD; done{filler}"
        );
        let Verdict::Redacted { text: whole, .. } = d.apply(&text, DlpAction::Redact) else {
            panic!("the text has hits");
        };
        for size in [1, 2, 3, 7, 16, 64, 255, 256, 257, 1000, 100_000] {
            assert_eq!(
                streamed(&d, DlpAction::Redact, &text, size),
                Screened::Pass(whole.clone()),
                "pieces of {size} bytes"
            );
            assert!(matches!(
                streamed(&d, DlpAction::Block, &text, size),
                Screened::Blocked(_)
            ));
            assert_eq!(
                streamed(&d, DlpAction::Redact, &filler, size),
                Screened::Pass(filler.clone())
            );
        }
        // Text is held back only by HOLD bytes (to the whitespace before them).
        let mut screen = StreamScreen::new(d.clone(), DlpAction::Redact);
        let Screened::Pass(first) = screen.push(&filler) else {
            panic!()
        };
        assert!(
            first.len() + StreamScreen::HOLD + 16 >= filler.len() && filler.starts_with(&first)
        );
        // A blob with no whitespace does not grow without bound.
        let mut screen = StreamScreen::new(d, DlpAction::Redact);
        let blob = "ab".repeat(10_000);
        let Screened::Pass(out) = screen.push(&blob) else {
            panic!()
        };
        assert_eq!(out.len(), blob.len());
    }
}
