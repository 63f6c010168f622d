//! What a backend supplies to the shared SQL, and the driver-free helpers that SQL uses.
//!
//! The SQL of every capability is written once, in `src/sql/`, and compiled for each
//! driver (see `sql/mod.rs`). It opens, scopes and locks through [`Backend`], the few things
//! SQLite and PostgreSQL do differently; everything here is compiled once.

use crate::{AuditHead, PageRequest, Result, StoreError};
use berth_audit::{Entry, NewEntry};
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use std::future::Future;

/// A transaction of driver `Db`, owning its connection.
pub(crate) type Tx<Db> = sqlx::Transaction<'static, Db>;

/// What a transaction is opened for; PostgreSQL turns it into session settings that its
/// row-level security policies read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TxKind<'a> {
    /// Work on one tenant's data.
    Tenant(&'a str),
    /// The operator's view of the tenant registry.
    Operator,
    /// The operator acting on one tenant (create, update, delete it).
    OperatorOn(&'a str),
    /// The authentication lookup, before any tenant is known.
    Auth,
}

/// The statements that differ between backends. Everything else is the same SQL
/// (`$n` placeholders, `RETURNING`, `ON CONFLICT`), which both drivers accept.
///
/// The futures are `Send` because every storage trait is `async_trait` (boxed `Send`
/// futures) and awaits them.
pub(crate) trait Backend: Sync {
    /// The sqlx driver the shared SQL is compiled against.
    type Db: sqlx::Database;

    /// Opens a transaction for `kind`; `write` tells a backend with separate read and write
    /// pools which to take.
    fn begin(
        &self,
        kind: TxKind<'_>,
        write: bool,
    ) -> impl Future<Output = Result<Tx<Self::Db>>> + Send;

    /// Scopes an open transaction to `tenant` once it is known (the key lookup learns it
    /// halfway through).
    fn scope_tx(tx: &mut Tx<Self::Db>, tenant: &str) -> impl Future<Output = Result<()>> + Send;

    /// Serialises version numbering and traffic changes of one agent until `tx` ends.
    fn lock_agent(
        tx: &mut Tx<Self::Db>,
        tenant: &str,
        agent: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Serialises appends to one tenant's audit chain until `tx` ends.
    fn lock_audit_chain(
        tx: &mut Tx<Self::Db>,
        tenant: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// `AuditStore::append_audit_after`: appends `entries` right after `head`, or answers
    /// `None` when the chain has moved on since.
    fn append_after_head(
        &self,
        scope: &TenantScope,
        head: &AuditHead,
        entries: &[NewEntry],
    ) -> impl Future<Output = Result<Option<Vec<Entry>>>> + Send;
}

/// Nine parameters a row: this many rows stay far below either driver's limit.
pub(crate) const INSERT_ROWS: usize = 100;

/// `entries` hashed into the tenant's chain after `head`.
pub(crate) fn chain_after(tenant: &str, head: &AuditHead, entries: &[NewEntry]) -> Vec<Entry> {
    let (mut seq, mut prev_hash) = (head.seq, head.hash.clone());
    let now = now_ms();
    let mut stored = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        let at = entry.at_ms.unwrap_or(now);
        let hash = berth_audit::entry_hash(tenant, seq, at, entry, &prev_hash);
        stored.push(Entry {
            seq,
            at_ms: at,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            details: entry.details.clone(),
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    stored
}

/// The `(created_at, id)` a newest-first page continues below: from the cursor
/// `"<created_at>:<id>"`, or above everything for the first page.
pub(crate) fn newest_first_cursor(page: &PageRequest) -> (i64, String) {
    page.cursor
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())))
        .unwrap_or((i64::MAX, "\u{10FFFF}".to_owned()))
}

/// One row more than the page holds: its presence tells `Page::from_rows` there is a next
/// page, without a separate count.
pub(crate) fn limit_plus_one(page: &PageRequest) -> i64 {
    page.limit.clamp(1, PageRequest::MAX_LIMIT) + 1
}

/// A value stored as JSON text; a value that cannot be serialised is a bug, reported as
/// corrupt data rather than a panic.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}
