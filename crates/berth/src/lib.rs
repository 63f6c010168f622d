//! The `berth` binary as a library: configuration, wiring of the server, logging, and the
//! client commands. `main.rs` only parses the command line and calls in here, so tests
//! can start the real server in-process.

pub mod app;
pub mod cli;
pub mod config;
pub mod logging;
pub mod pack;
pub mod validate;

pub use app::{Server, start};
pub use config::Config;
