//! `kv`: the agent's own key-value store. The caller's host scopes every key to the run's
//! tenant and agent; here keys and values are bounded in size.

use crate::bindings::{kv, types};
use crate::caps::error;
use crate::state::State;

impl State {
    fn check_key(&self, key: &str) -> Result<(), types::Error> {
        if key.is_empty() || key.len() > self.caps.max_kv_key_bytes {
            return Err(error(
                "invalid",
                format!("a key has 1 to {} bytes", self.caps.max_kv_key_bytes),
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(error("invalid", "a key has no control characters"));
        }
        Ok(())
    }
}

impl kv::Host for State {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::Error> {
        self.check_key(&key)?;
        Ok(self.host.kv_get(&key).await?)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), types::Error> {
        self.check_key(&key)?;
        if value.len() > self.caps.max_kv_value_bytes {
            return Err(error(
                "too_large",
                format!("a value has at most {} bytes", self.caps.max_kv_value_bytes),
            ));
        }
        Ok(self.host.kv_set(&key, value).await?)
    }

    async fn delete(&mut self, key: String) -> Result<(), types::Error> {
        self.check_key(&key)?;
        Ok(self.host.kv_delete(&key).await?)
    }
}
