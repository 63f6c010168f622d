//! The SQL of every storage capability, written once and compiled for each backend.
//!
//! `sqlite.rs` and `postgres.rs` each mount this directory with
//! `#[path = "sql/mod.rs"] mod sql;` after naming their store type `Store`; the files here
//! implement the storage traits for that `Store`, with `Db` (its driver) taken from its
//! [`Backend`] implementation. So each file is plain Rust that rustfmt formats and an IDE
//! navigates (it opens the SQLite copy), instead of one macro body expanded twice, and
//! there is no generic code whose driver bounds (`Encode`, `Decode`, `Type`, `Executor` for
//! every bound type) would outgrow the SQL. Both drivers accept the same statements (`$n`
//! placeholders, `RETURNING`, `ON CONFLICT`); what differs goes through [`Backend`].
//!
//! A new capability is one more file here and one `mod` line below.

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
