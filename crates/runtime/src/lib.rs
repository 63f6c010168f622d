//! The run engine: which version serves a run, the built-in agent loop of manifest agents
//! (model turns through the gateway, tool calls through one tool interface, approvals,
//! limits on steps, time and cost, every step traced), and the live runs of this process.

pub mod dlp;
pub mod engine;
pub mod events;
pub mod scheduler;
pub mod tools;

pub use engine::{Begin, Checkpoint, Decision, Outcome, RunSpec, RunUsage, Status, run_builtin};
pub use events::{LiveRun, RunEvent, RunHub, events_from_steps};
pub use tools::{MockTools, ToolCallCtx, ToolError, ToolHost, ToolSet};

use berth_store::Traffic;

/// Picks the version of a run: the request's own (already authorised), the caller key's
/// pin, the thread's version (a thread keeps the version it started on), then the split.
pub fn choose_version(
    traffic: &Traffic,
    requested: Option<i64>,
    key_id: Option<&str>,
    thread_version: Option<i64>,
) -> Option<i64> {
    if let Some(v) = requested {
        return Some(v);
    }
    if let Some(p) = key_id.and_then(|k| traffic.pins.iter().find(|p| p.key == k)) {
        return Some(p.version);
    }
    if thread_version.is_some() {
        return thread_version;
    }
    let total: u32 = traffic.split.iter().map(|s| s.weight).sum();
    if total == 0 {
        return None;
    }
    let mut roll = rand::Rng::gen_range(&mut rand::thread_rng(), 0..total);
    for s in &traffic.split {
        if roll < s.weight {
            return Some(s.version);
        }
        roll -= s.weight;
    }
    traffic.split.last().map(|s| s.version)
}
#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::{Pin, SplitEntry};

    #[test]
    fn version_choice_order_and_weights() {
        let t = Traffic {
            split: vec![
                SplitEntry {
                    version: 3,
                    weight: 90,
                },
                SplitEntry {
                    version: 4,
                    weight: 10,
                },
            ],
            pins: vec![Pin {
                key: "key_p".into(),
                version: 2,
            }],
            previous_full: None,
        };
        assert_eq!(choose_version(&t, Some(1), Some("key_p"), Some(5)), Some(1));
        assert_eq!(choose_version(&t, None, Some("key_p"), Some(5)), Some(2));
        assert_eq!(choose_version(&t, None, Some("key_q"), Some(5)), Some(5));
        let mut counts = [0u32; 2];
        for _ in 0..10_000 {
            match choose_version(&t, None, None, None) {
                Some(3) => counts[0] += 1,
                Some(4) => counts[1] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!((8_700..=9_300).contains(&counts[0]), "{counts:?}");
        assert_eq!(choose_version(&Traffic::default(), None, None, None), None);
    }
}
