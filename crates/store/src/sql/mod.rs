//! The SQL of every storage capability, written once and compiled for each backend.
//!
//! `sqlite.rs` and `postgres.rs` each mount this directory with
//! `#[path = "sql/mod.rs"] mod sql;` after naming their store type `Store`. The files here
//! implement the storage traits for that `Store`, against the aliases below: `Db` (its
//! driver, from its [`Backend`] implementation), `Tx` and `DbRow`. Each file is therefore
//! ordinary Rust: rustfmt formats it, the compiler reports errors at its own lines, and an
//! IDE navigates it (rust-analyzer analyses a file mounted twice as one of its two modules;
//! they are the same text). It replaces one macro body expanded per driver, which neither
//! could enter. Generic code over `sqlx::Database` was the alternative; its bounds
//! (`Encode`, `Decode` and `Type` for every bound type, `Executor` for every connection)
//! would outgrow the SQL.
//!
//! Both drivers accept the same statements (`$n` placeholders, `RETURNING`, `ON CONFLICT`);
//! what differs (opening and scoping a transaction, the agent and audit-chain locks, the
//! one-statement audit append) goes through [`Backend`]. A new capability is one more file
//! here and one `mod` line below; see ARCHITECTURE.md.

use crate::backend::Backend;

/// The backend's store type, which every file here implements the traits for.
type Store = super::Store;
/// Its driver.
type Db = <Store as Backend>::Db;
/// A transaction of that driver.
type Tx = crate::backend::Tx<Db>;
/// A result row of that driver.
type DbRow = <Db as sqlx::Database>::Row;

mod agents;
mod approvals;
/// `pub(super)`: SQLite's one-statement append (`sqlite.rs`) uses `insert_audit_rows`.
pub(super) mod audit;
mod budgets;
mod kv;
mod mcp;
mod policy;
mod providers;
mod runs;
mod secrets;
mod tenants;
mod threads;
mod usage;
