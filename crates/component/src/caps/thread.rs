//! `thread`: the history of the run's own thread (the caller's host knows which one).

use crate::bindings::{llm, thread};
use crate::caps::llm::message_to_wit;
use crate::state::State;

impl thread::Host for State {
    async fn history(&mut self) -> Vec<llm::Message> {
        self.host
            .history()
            .await
            .iter()
            .map(message_to_wit)
            .collect()
    }
}
