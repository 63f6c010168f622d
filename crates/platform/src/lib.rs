//! The application core of Berth: what the platform does, independent of how it is asked.
//!
//! Each service module validates its input, checks the caller's role, performs the change
//! with its audit entry in one store transaction and keeps the caches consistent with it;
//! the run executor and sweeper, the gateway calls, the tool gate and the component host
//! live here too, with the node's background tasks. [`Platform`] wires them together.
//!
//! This crate knows nothing of HTTP: its functions take a [`TenantCaller`] (or a
//! `TenantScope`) and domain values and answer domain values or an [`Error`]. The `api`
//! crate turns requests into those calls and answers into responses; the `berth` binary
//! builds the [`Platform`] from its configuration (checked by `tests/layers.rs`).

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod budgets;
pub mod bundle;
pub mod caches;
pub mod components;
pub mod error;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod llm;
pub mod policy;
pub mod providers;
pub mod runner;
pub mod runs;
pub mod secrets;
mod tasks;
pub mod tenants;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod tools;
pub mod usage;
pub mod view;
mod wiring;

pub use auth::{Authenticator, Credential, TenantCaller};
pub use error::{Error, ErrorKind, RateReport};
pub use runner::RunSettings;
pub use wiring::{Platform, Settings, Wiring, WiringError};
