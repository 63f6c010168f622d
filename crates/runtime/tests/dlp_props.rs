//! Properties of the data-loss detectors: no text makes them panic; redaction is complete
//! (screening a redacted text again finds nothing of that detector) and leaves a text
//! without any match unchanged; and a text screened as it streams in, however it is cut,
//! gives what screening it whole gives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_core::policy::{CustomDetector, DLP_DETECTORS, DlpAction, DlpPolicy};
use berth_runtime::dlp::{Dlp, Screened, StreamScreen, Verdict};
use proptest::prelude::*;
use std::sync::Arc;

fn dlp_of(detect: &[&str], custom: bool) -> Dlp {
    Dlp::from_policy(&DlpPolicy {
        detect: detect.iter().map(|s| s.to_string()).collect(),
        custom: if custom {
            vec![CustomDetector {
                name: "ticket".into(),
                regex: "TCK-[0-9]{6}".into(),
            }]
        } else {
            vec![]
        },
        on_tool_args: DlpAction::Block,
        on_tool_results: DlpAction::Redact,
        on_llm_output: DlpAction::Redact,
    })
}

fn all() -> Dlp {
    dlp_of(DLP_DETECTORS, true)
}

/// A card number that passes Luhn, in groups of four split by `sep`.
fn card() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(0u32..10, 15),
        prop_oneof![Just(""), Just(" "), Just("-")],
    )
        .prop_map(|(mut d, sep)| {
            let sum: u32 = d
                .iter()
                .rev()
                .enumerate()
                .map(|(i, &x)| {
                    if i % 2 == 0 {
                        if x * 2 > 9 { x * 2 - 9 } else { x * 2 }
                    } else {
                        x
                    }
                })
                .sum();
            d.push((10 - sum % 10) % 10);
            d.chunks(4)
                .map(|g| {
                    g.iter()
                        .map(|x| char::from_digit(*x, 10).unwrap())
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join(sep)
        })
}

/// A fragment of text: prose, numbers, and things every detector looks for (and things
/// that merely look like them).
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-zA-Zé]{1,8}",
        2 => "[0-9]{1,6}",
        1 => "[a-z.]{1,6}@[a-z]{1,6}\\.(com|io|co\\.uk)",
        1 => "\\+?1? ?\\(?[0-9]{3}\\)? ?[0-9]{3}[ .-]?[0-9]{4}",
        1 => card(),
        1 => "[0-9]{4}( [0-9]{4}){3}",
        1 => prop_oneof![Just("DE89 3704 0044 0532 0130 00"), Just("GB82 WEST 1234 5698 7654 32"), Just("GB82WEST12345698765432")].prop_map(str::to_owned),
        1 => "[0-9]{3}-[0-9]{2}-[0-9]{4}",
        1 => "sk-[A-Za-z0-9]{16,30}",
        1 => "AKIA[0-9A-Z]{16}",
        1 => "[A-Za-z0-9+/=_-]{14,40}",
        1 => "TCK-[0-9]{5,7}",
        1 => "\\PC{1,6}",
        1 => "[\\x00-\\x1f\\u{85}\\u{2028}\\u{3000}]{1,3}",
    ]
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just(" "),
        1 => Just(""),
        1 => Just("\n"),
        1 => Just(", "),
        1 => Just("-"),
        1 => Just("."),
        1 => Just("\u{a0}"),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec((fragment(), separator()), 0..40)
        .prop_map(|parts| parts.into_iter().map(|(f, s)| f + s).collect())
}

/// Cuts `text` at these byte offsets (moved forward to char boundaries).
fn pieces<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| {
            let mut c = c % (text.len() + 1);
            while !text.is_char_boundary(c) {
                c += 1;
            }
            c
        })
        .collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for c in at {
        out.push(&text[from..c]);
        from = c;
    }
    out.push(&text[from..]);
    out
}

fn streamed(dlp: &Arc<Dlp>, action: DlpAction, text: &str, cuts: &[usize]) -> Screened {
    let mut screen = StreamScreen::new(dlp.clone(), action);
    let mut out = String::new();
    for piece in pieces(text, cuts) {
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

fn whole(dlp: &Dlp, action: DlpAction, text: &str) -> Screened {
    match dlp.apply(text, action) {
        Verdict::Clean(t) | Verdict::Redacted { text: t, .. } => Screened::Pass(t),
        Verdict::Blocked { detectors } => Screened::Blocked(detectors),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_text_makes_a_detector_panic(
        text in prop_oneof![text(), "\\PC{0,300}", ".{0,200}"],
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let d = Arc::new(all());
        let hits = d.scan(&text);
        let mut end = 0;
        for h in &hits {
            prop_assert!(h.start >= end && h.start < h.end && h.end <= text.len());
            prop_assert!(text.is_char_boundary(h.start) && text.is_char_boundary(h.end));
            end = h.end;
        }
        for action in [DlpAction::Allow, DlpAction::Block, DlpAction::Redact] {
            let _ = d.apply(&text, action);
            let _ = streamed(&d, action, &text, &cuts);
        }
    }

    #[test]
    fn redaction_is_complete_and_clean_text_is_untouched(text in text()) {
        for name in DLP_DETECTORS {
            let d = dlp_of(&[name], false);
            match d.apply(&text, DlpAction::Redact) {
                Verdict::Redacted { text: out, detectors } => {
                    prop_assert_eq!(detectors, vec![name.to_string()]);
                    let again = d.scan(&out);
                    prop_assert!(again.is_empty(), "{}: {:?} left in {:?} (from {:?})", name, again, out, text);
                }
                Verdict::Clean(out) => {
                    prop_assert!(d.scan(&text).is_empty());
                    prop_assert_eq!(out, text.clone());
                }
                Verdict::Blocked { .. } => prop_assert!(false, "redact never blocks"),
            }
        }
        let d = all();
        if d.scan(&text).is_empty() {
            for action in [DlpAction::Block, DlpAction::Redact, DlpAction::Allow] {
                prop_assert_eq!(d.apply(&text, action), Verdict::Clean(text.clone()));
            }
        } else if let Verdict::Redacted { text: out, .. } = d.apply(&text, DlpAction::Redact) {
            prop_assert!(d.scan(&out).is_empty(), "left in {:?} (from {:?})", out, text);
        }
    }

    #[test]
    fn a_stream_is_screened_as_if_whole_however_it_is_cut(
        text in text(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let d = Arc::new(all());
        for action in [DlpAction::Redact, DlpAction::Block, DlpAction::Allow] {
            let want = whole(&d, action, &text);
            let got = streamed(&d, action, &text, &cuts);
            match (&want, &got) {
                // A block may name only the detectors of the part seen when it stopped.
                (Screened::Blocked(_), Screened::Blocked(_)) => {}
                _ => prop_assert_eq!(&got, &want, "{:?} cut at {:?}", text, pieces(&text, &cuts)),
            }
        }
    }
}
