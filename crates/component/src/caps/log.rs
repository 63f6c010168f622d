//! `log`: lines for the run's log, capped per run in count and length.

use crate::bindings::log;
use crate::host::LogLevel;
use crate::state::State;

impl log::Host for State {
    async fn write(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.log(level, &message);
    }
}
