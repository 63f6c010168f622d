//! Hooks that let the test suite break the server on purpose (feature `test-hooks`, enabled
//! only by the test kit): a run of a chosen agent panics, so the tests can show that a panic
//! ends that one run and nothing else.

use std::sync::Mutex;

static PANIC_AGENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Every later run of `agent` (in this process) panics as soon as it starts executing.
pub fn panic_runs_of(agent: &str) {
    if let Ok(mut agents) = PANIC_AGENTS.lock() {
        agents.push(agent.to_owned());
    }
}

/// Called by the run executor.
#[allow(clippy::panic)] // the purpose of the hook
pub(crate) fn maybe_panic(agent: &str) {
    let armed = PANIC_AGENTS
        .lock()
        .map(|agents| agents.iter().any(|a| a == agent))
        .unwrap_or(false);
    if armed {
        panic!("test hook: a run of agent '{agent}' panics on purpose");
    }
}
