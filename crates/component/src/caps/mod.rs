//! The host side of each import, one module per capability (the spin habit): each host
//! function checks the manifest's allow-list and the sizes first, then asks the caller's
//! [`AgentHost`](crate::AgentHost). Each module has a test that the capability is refused
//! without the permission (`tests/hostile.rs` and the module's own tests).

pub(crate) mod config;
pub(crate) mod http;
pub(crate) mod kv;
pub(crate) mod llm;
pub(crate) mod log;
pub(crate) mod thread;
pub(crate) mod tools;

use crate::bindings::types;
use crate::host::HostError;
use crate::state::State;

impl types::Host for State {}

/// The WIT `error` record.
pub(crate) fn error(code: &str, message: impl Into<String>) -> types::Error {
    types::Error {
        code: code.to_owned(),
        message: message.into(),
    }
}

impl From<HostError> for types::Error {
    fn from(e: HostError) -> Self {
        types::Error {
            code: e.code,
            message: e.message,
        }
    }
}
