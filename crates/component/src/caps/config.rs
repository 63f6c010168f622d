//! `config`: the agent's non-secret variables, as the caller's host gives them. There is no
//! allow-list to check: the host only knows non-secret values (secrets are injected into
//! outbound requests by the platform, never handed to a component).

use crate::bindings::config;
use crate::state::State;

impl config::Host for State {
    async fn get(&mut self, key: String) -> Option<String> {
        self.host.config(&key)
    }
}
