//! Service functions: what each endpoint does, independent of HTTP parsing.
//!
//! Each validates its input, performs the change with its audit entry in one store
//! transaction, and keeps caches (authentication) consistent with it.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod billing;
pub mod budgets;
pub mod bundle;
pub mod components;
pub mod keys;
pub mod limits;
pub mod llm;
pub mod policy;
pub mod providers;
pub mod runner;
pub mod runs;
pub mod secrets;
pub mod tenants;
pub mod tools;
pub mod usage;
