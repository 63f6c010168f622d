//! Data-loss rules: detectors for personal data and secrets in text that leaves or enters
//! an agent (tool arguments, tool results, model output), and what the policy does with a
//! hit: `block`, `redact` (each match becomes `[REDACTED:<detector>]`) or `allow`.
//!
//! Detectors check more than a pattern where a checksum exists (credit cards by Luhn, IBANs
//! by mod-97, US SSNs by the ranges never issued), so numbers that merely look alike are not
//! flagged. A hit is reported by detector name and position, never by its value.
//!
//! Screening must not let one tenant's rules stall anyone else: custom patterns are compiled
//! under a size cap (so the cost per byte of text is bounded), large texts are screened on
//! the blocking pool, and every screening has a time budget past which the text is withheld
//! (`dlp_timeout`), never passed on unscreened.

use berth_core::policy::{DlpAction, DlpPolicy};
use regex::{Regex, RegexBuilder};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod stream;
pub use stream::{Screened, StreamScreen};

/// The compiled program of one custom pattern may be at most this large (bytes of the
/// regex crate's NFA): a pattern such as 5,000 repetitions of `.*` is refused when the
/// policy is written instead of making every byte of every text cost thousands of steps.
pub const CUSTOM_SIZE_LIMIT: usize = 64 * 1024;
/// The lazy DFA cache of one custom pattern (per thread that screens).
const CUSTOM_DFA_LIMIT: usize = 1024 * 1024;
/// Texts up to this size are screened in place; larger ones on the blocking pool.
pub const INLINE_BYTES: usize = 8 * 1024;
/// The longest one screening may take; past it the text is withheld.
pub const SCREEN_BUDGET: Duration = Duration::from_secs(2);
/// The detector named in a verdict when screening ran out of time.
pub const TIMEOUT_DETECTOR: &str = "dlp_timeout";

/// Compiles a tenant's custom pattern under the caps every custom pattern has, or says
/// why it is refused (the message names the cap, for the policy writer's 400).
pub fn compile_custom(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(CUSTOM_SIZE_LIMIT)
        .dfa_size_limit(CUSTOM_DFA_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!(
                "the pattern compiles to more than {} KiB; use fewer repetitions, \
                 counted repeats or Unicode classes (for example [0-9] instead of \\d)",
                CUSTOM_SIZE_LIMIT / 1024
            ),
            other => other.to_string(),
        })
}

/// A data-loss hit of a run: where, which detectors, what was done (never the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlpHit {
    pub on: String,
    pub detectors: Vec<String>,
    pub action: String,
}

impl DlpHit {
    /// The data of the run's `dlp` trace step.
    pub fn step_data(&self) -> serde_json::Value {
        serde_json::json!({"on": self.on, "detectors": self.detectors, "action": self.action})
    }
}

/// The screening ran out of its time budget.
struct OutOfTime;

/// One match of a detector in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub detector: String,
    pub start: usize,
    pub end: usize,
}

/// What applying the rules to a text gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing found, or the action is `allow`: the text as it was.
    Clean(String),
    /// Matches replaced by `[REDACTED:<detector>]`.
    Redacted {
        text: String,
        detectors: Vec<String>,
    },
    /// The text must not pass.
    Blocked { detectors: Vec<String> },
}

struct Detector {
    name: String,
    re: Regex,
    check: fn(&str) -> bool,
}

/// The detectors of one tenant's policy, compiled.
pub struct Dlp {
    detectors: Vec<Detector>,
    pub on_tool_args: DlpAction,
    pub on_tool_results: DlpAction,
    pub on_llm_output: DlpAction,
}

fn any(_: &str) -> bool {
    true
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// The Luhn checksum of a card number's digits.
pub fn luhn(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                if x * 2 > 9 { x * 2 - 9 } else { x * 2 }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The ISO 13616 checksum: move the first four characters to the end, letters to numbers,
/// and the whole number modulo 97 is 1.
pub fn iban_ok(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u64 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c {
            '0'..='9' => u64::from(c as u8 - b'0'),
            'A'..='Z' => u64::from(c as u8 - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// An SSN that could have been issued: area not 000, 666 or 9xx; group not 00; serial not
/// 0000.
fn ssn_ok(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 {
        return false;
    }
    let area = d[0] * 100 + d[1] * 10 + d[2];
    let group = d[3] * 10 + d[4];
    let serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn phone_ok(s: &str) -> bool {
    (10..=15).contains(&digits(s).len())
}

/// Shannon entropy of a token in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_insert(0u32) += 1;
    }
    let n = s.chars().count() as f64;
    counts
        .values()
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// A known key shape, or a long random-looking token (high entropy, letters and digits).
fn secret_ok(s: &str) -> bool {
    static KNOWN: OnceLock<Option<Regex>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        Regex::new(r"^(sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,}|bk_[A-Za-z0-9]{20,}|bop_[A-Za-z0-9_]{16,}|ghp_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})$").ok()
    });
    if known.as_ref().is_some_and(|re| re.is_match(s)) {
        return true;
    }
    let has_digit = s.chars().any(|c| c.is_ascii_digit());
    let has_alpha = s.chars().any(|c| c.is_ascii_alphabetic());
    s.len() >= 32 && has_digit && has_alpha && entropy(s) >= 4.0
}

/// A built-in detector: its pattern and the check a match must pass.
type Builtin = (&'static str, fn(&str) -> bool);

fn builtin(name: &str) -> Option<Builtin> {
    Some(match name {
        "email" => (
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            any,
        ),
        "phone" => (r"\+?\(?\d[\d ().-]{8,18}\d", phone_ok),
        "credit_card" => (r"\b\d(?:[ -]?\d){12,18}\b", luhn),
        "iban" => (r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", iban_ok),
        "us_ssn" => (r"\b\d{3}-\d{2}-\d{4}\b", ssn_ok),
        "secret_token" => (r"[A-Za-z0-9][A-Za-z0-9_\-+/=]{15,}", secret_ok),
        _ => return None,
    })
}

impl Dlp {
    /// The rules of a policy (validated when the policy was written; a detector that still
    /// does not compile is skipped, never a reason to let everything through unlabelled).
    pub fn from_policy(p: &DlpPolicy) -> Dlp {
        let mut detectors = Vec::new();
        for name in &p.detect {
            if let Some((pattern, check)) = builtin(name)
                && let Ok(re) = Regex::new(pattern)
            {
                detectors.push(Detector {
                    name: name.clone(),
                    re,
                    check,
                });
            }
        }
        for c in &p.custom {
            // The same caps as at policy write: a policy stored before they existed may hold
            // a pattern that no longer compiles, which is skipped like any other.
            if let Ok(re) = compile_custom(&c.regex) {
                detectors.push(Detector {
                    name: c.name.clone(),
                    re,
                    check: any,
                });
            }
        }
        Dlp {
            detectors,
            on_tool_args: p.on_tool_args,
            on_tool_results: p.on_tool_results,
            on_llm_output: p.on_llm_output,
        }
    }

    /// Every match, the earliest first; overlapping matches keep the first (and longest).
    pub fn scan(&self, text: &str) -> Vec<Hit> {
        // With no deadline the scan cannot run out of time.
        self.scan_until(text, None).unwrap_or_default()
    }

    /// [`Dlp::scan`], giving up once `deadline` has passed (checked between detectors and
    /// between matches; the size cap on patterns bounds the work between two checks).
    fn scan_until(&self, text: &str, deadline: Option<Instant>) -> Result<Vec<Hit>, OutOfTime> {
        let mut hits = self.matches_until(text, deadline, true)?;
        hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut kept: Vec<Hit> = Vec::new();
        for h in hits {
            if kept.last().is_none_or(|k| h.start >= k.end) {
                kept.push(h);
            }
        }
        Ok(kept)
    }

    /// Every detector's matches, overlapping ones included: only those that pass the
    /// detector's check (`checked`), or every candidate (where a stream may not be cut).
    fn matches_until(
        &self,
        text: &str,
        deadline: Option<Instant>,
        checked: bool,
    ) -> Result<Vec<Hit>, OutOfTime> {
        let late = || deadline.is_some_and(|d| Instant::now() >= d);
        let mut hits: Vec<Hit> = Vec::new();
        for d in &self.detectors {
            if late() {
                return Err(OutOfTime);
            }
            for m in d.re.find_iter(text) {
                if late() {
                    return Err(OutOfTime);
                }
                if !checked || (d.check)(m.as_str()) {
                    hits.push(Hit {
                        detector: d.name.clone(),
                        start: m.start(),
                        end: m.end(),
                    });
                }
            }
        }
        Ok(hits)
    }

    /// Applies `action` to `text`, within [`SCREEN_BUDGET`]. Synchronous: callers on an
    /// async task use [`Dlp::screen`], which moves large texts to the blocking pool.
    pub fn apply(&self, text: &str, action: DlpAction) -> Verdict {
        self.apply_until(text, action, Instant::now() + SCREEN_BUDGET)
    }

    /// Screens `text` under the rule for `on` (`tool_args`, `tool_results`, anything else
    /// the model's output), as [`Dlp::screen`]; a hit is answered too, by detector name
    /// only, for the run's trace (see [`DlpHit::step_data`]) and the audit log.
    pub async fn screen_on(self: &Arc<Self>, on: &str, text: &str) -> (Verdict, Option<DlpHit>) {
        let action = match on {
            "tool_args" => self.on_tool_args,
            "tool_results" => self.on_tool_results,
            _ => self.on_llm_output,
        };
        let verdict = self.screen(text, action).await;
        let hit = match &verdict {
            Verdict::Clean(_) => None,
            Verdict::Redacted { detectors, .. } => Some((detectors.clone(), "redact")),
            Verdict::Blocked { detectors } => Some((detectors.clone(), "block")),
        }
        .map(|(detectors, action)| DlpHit {
            on: on.to_owned(),
            detectors,
            action: action.to_owned(),
        });
        (verdict, hit)
    }

    /// Applies `action` to `text` on the blocking pool when it is large, so that a slow
    /// screening holds no async worker (other requests, other tenants, `/healthz` go on);
    /// a screening that exceeds [`SCREEN_BUDGET`] withholds the text ([`TIMEOUT_DETECTOR`]).
    pub async fn screen(self: &Arc<Self>, text: &str, action: DlpAction) -> Verdict {
        if action == DlpAction::Allow || self.detectors.is_empty() {
            return Verdict::Clean(text.to_owned());
        }
        let deadline = Instant::now() + SCREEN_BUDGET;
        if text.len() <= INLINE_BYTES {
            return self.apply_until(text, action, deadline);
        }
        let (dlp, owned) = (self.clone(), text.to_owned());
        let job = tokio::task::spawn_blocking(move || dlp.apply_until(&owned, action, deadline));
        // The blocking task checks the deadline itself; this bound also covers the time it
        // waited for a thread of the pool.
        match tokio::time::timeout(SCREEN_BUDGET, job).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_)) | Err(_) => out_of_time(text.len()),
        }
    }

    fn apply_until(&self, text: &str, action: DlpAction, deadline: Instant) -> Verdict {
        let found = match action {
            DlpAction::Allow => return Verdict::Clean(text.to_owned()),
            DlpAction::Block => self.scan_until(text, Some(deadline)).map(|hits| {
                (
                    String::new(),
                    hits.into_iter().map(|h| h.detector).collect(),
                )
            }),
            DlpAction::Redact => self.redact_until(text, deadline),
        };
        let Ok((out, mut detectors)) = found else {
            return out_of_time(text.len());
        };
        if detectors.is_empty() {
            // Redaction answered an untouched copy already.
            let out = if action == DlpAction::Redact {
                out
            } else {
                text.to_owned()
            };
            return Verdict::Clean(out);
        }
        detectors.sort();
        detectors.dedup();
        match action {
            DlpAction::Block => Verdict::Blocked { detectors },
            _ => Verdict::Redacted {
                text: out,
                detectors,
            },
        }
    }

    /// `text` with every match masked, and the detectors that matched (empty: none, and the
    /// text is as it was).
    fn redact_until(
        &self,
        text: &str,
        deadline: Instant,
    ) -> Result<(String, Vec<String>), OutOfTime> {
        let mut out = text.to_owned();
        let mut detectors = Vec::new();
        // A match that overlapped a redacted one may stand alone once that one is masked:
        // screen again until nothing is left (each pass masks at least one more match).
        for _ in 0..=REDACT_PASSES {
            let hits = self.scan_until(&out, Some(deadline))?;
            if hits.is_empty() {
                break;
            }
            detectors.extend(hits.iter().map(|h| h.detector.clone()));
            out = redact(&out, &hits);
        }
        Ok((out, detectors))
    }

    /// `text` as redaction leaves it (see [`Dlp::redact_until`]).
    fn redacted_until(&self, text: &str, deadline: Instant) -> Result<String, OutOfTime> {
        self.redact_until(text, deadline).map(|(out, _)| out)
    }
}

/// Passes of redaction over a text after the first, at most (see [`Dlp::apply`]).
const REDACT_PASSES: usize = 4;

/// `text` with each of `hits` (sorted, not overlapping) masked.
fn redact(text: &str, hits: &[Hit]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for h in hits {
        out.push_str(&text[at..h.start]);
        out.push_str(&format!("[REDACTED:{}]", h.detector));
        at = h.end;
    }
    out.push_str(&text[at..]);
    out
}

/// The verdict of a screening that ran out of time: the text does not pass.
fn out_of_time(bytes: usize) -> Verdict {
    warn_out_of_time(bytes);
    Verdict::Blocked {
        detectors: vec![TIMEOUT_DETECTOR.to_owned()],
    }
}

fn warn_out_of_time(bytes: usize) {
    tracing::warn!(
        bytes,
        budget_ms = u64::try_from(SCREEN_BUDGET.as_millis()).unwrap_or(u64::MAX),
        "data-loss screening ran out of time; the text is withheld"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::policy::CustomDetector;

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

    fn found(d: &Dlp, text: &str) -> Vec<String> {
        d.scan(text).into_iter().map(|h| h.detector).collect()
    }

    #[test]
    fn detectors_find_what_they_should_and_not_look_alikes() {
        let d = dlp(&[
            "email",
            "phone",
            "credit_card",
            "iban",
            "us_ssn",
            "secret_token",
        ]);
        assert_eq!(found(&d, "mail jane.doe@example.co.uk now"), ["email"]);
        assert_eq!(found(&d, "card 4111 1111 1111 1111 ok"), ["credit_card"]);
        assert!(
            found(&d, "order 4111 1111 1111 1112")
                .iter()
                .all(|x| x != "credit_card"),
            "fails Luhn"
        );
        assert_eq!(
            found(&d, "pay to DE89 3704 0044 0532 0130 00 please"),
            ["iban"]
        );
        assert!(
            found(&d, "ref DE89 3704 0044 0532 0130 01")
                .iter()
                .all(|x| x != "iban"),
            "bad checksum"
        );
        assert_eq!(found(&d, "ssn 123-45-6789"), ["us_ssn"]);
        assert!(found(&d, "ssn 666-45-6789").is_empty(), "never issued");
        assert_eq!(found(&d, "call +1 (415) 555-0100 today"), ["phone"]);
        assert_eq!(
            found(&d, "key sk-live-0123456789abcdefABCD here"),
            ["secret_token"]
        );
        assert_eq!(found(&d, "AKIAIOSFODNN7EXAMPLE"), ["secret_token"]);
        assert_eq!(
            found(&d, "token 9fQ2xL7pZ3vK8mN1bR6tW4yH0cJ5dG2s"),
            ["secret_token"]
        );
        assert!(
            found(&d, "the_quick_brown_fox_jumps_over_it").is_empty(),
            "low entropy words"
        );
        assert_eq!(found(&d, "see TCK-123456"), ["ticket"]);
        assert!(found(&d, "nothing to see here, 42 apples").is_empty());
    }

    #[test]
    fn actions_block_redact_or_allow() {
        let d = dlp(&["email", "us_ssn"]);
        let text = "write to a@b.io about 123-45-6789";
        assert_eq!(
            d.apply(text, DlpAction::Redact),
            Verdict::Redacted {
                text: "write to [REDACTED:email] about [REDACTED:us_ssn]".into(),
                detectors: vec!["email".into(), "us_ssn".into()]
            }
        );
        assert_eq!(
            d.apply(text, DlpAction::Block),
            Verdict::Blocked {
                detectors: vec!["email".into(), "us_ssn".into()]
            }
        );
        assert_eq!(d.apply(text, DlpAction::Allow), Verdict::Clean(text.into()));
        assert_eq!(
            d.apply("clean", DlpAction::Block),
            Verdict::Clean("clean".into())
        );
    }

    #[test]
    fn checksums() {
        assert!(luhn("4012888888881881"));
        assert!(!luhn("4012888888881882"));
        assert!(iban_ok("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_ok("GB82 WEST 1234 5698 7654 33"));
        assert!(entropy("aaaa") < 0.1);
    }

    #[test]
    fn custom_patterns_are_compiled_under_a_size_cap() {
        let bomb = ".*".repeat(5000);
        let e = compile_custom(&bomb).err().unwrap();
        assert!(e.contains("compiles to more than 64 KiB"), "{e}");
        assert!(compile_custom("TCK-[0-9]{6}").is_ok());
        assert!(compile_custom(r"\bACME-[A-Za-z0-9]{8}\b").is_ok());
        // A policy stored before the cap: its oversized pattern is skipped, the rest works.
        let d = Dlp::from_policy(&DlpPolicy {
            detect: vec!["email".into()],
            custom: vec![CustomDetector {
                name: "bomb".into(),
                regex: bomb,
            }],
            on_tool_args: DlpAction::Block,
            on_tool_results: DlpAction::Block,
            on_llm_output: DlpAction::Block,
        });
        assert_eq!(found(&d, "a@b.io"), ["email"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_screening_past_its_budget_withholds_the_text() {
        // The heaviest patterns the cap allows, as many as a policy may have, over 4 MB:
        // far more than the budget, so the screening stops and the text does not pass.
        let heavy = ".*".repeat(60);
        assert!(compile_custom(&heavy).is_ok());
        let d = Arc::new(Dlp::from_policy(&DlpPolicy {
            detect: Vec::new(),
            custom: (0..berth_core::policy::MAX_CUSTOM_DETECTORS)
                .map(|i| CustomDetector {
                    name: format!("heavy{i}"),
                    regex: format!("{heavy}Z{i}Q"),
                })
                .collect(),
            on_tool_args: DlpAction::Redact,
            on_tool_results: DlpAction::Redact,
            on_llm_output: DlpAction::Redact,
        }));
        let text = "lorem ipsum dolor sit amet\n".repeat(4_000_000 / 27);
        let started = Instant::now();
        let verdict = d.screen(&text, DlpAction::Redact).await;
        assert_eq!(
            verdict,
            Verdict::Blocked {
                detectors: vec![TIMEOUT_DETECTOR.into()]
            }
        );
        assert!(started.elapsed() < SCREEN_BUDGET + Duration::from_millis(500));
        // A small text is screened in place, as before.
        assert_eq!(
            d.screen("nothing here", DlpAction::Redact).await,
            Verdict::Clean("nothing here".into())
        );
    }
}
