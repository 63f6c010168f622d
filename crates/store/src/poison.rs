//! Batched writes that one bad row cannot stall: a store that is down is waited for, a
//! batch the store refuses for its content is split until the refused rows are found,
//! and each of those is written once more cleaned of control characters, or else set
//! aside with an error. Used by the usage recorder and the audit writer.

use crate::StoreError;
use async_trait::async_trait;
use std::time::Duration;

/// Where a background writer puts its rows (one tenant's, in order).
#[async_trait]
pub trait BatchSink<T: Sync>: Send {
    async fn insert(&mut self, rows: &[T]) -> Result<(), StoreError>;
}

/// Tries a batch the store refused for something other than being down gets before it is
/// split: a refusal may still be passing (a lock, a serialization failure).
const REFUSED_TRIES: u32 = 3;

/// What became of a write.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows stored after their control characters were removed.
    pub cleaned: usize,
    /// Rows the store refused even cleaned: logged with `describe` and not retried.
    pub set_aside: usize,
}

/// Writes `rows` through `sink` in order. A store that is down (or fails in any way that
/// may pass) is waited for with backoff, however long (usage is money, audit is evidence:
/// both stay in memory, and in the journal, meanwhile); a write for a tenant that no longer
/// exists is dropped; a batch the store refuses for its content
/// ([`StoreError::is_refused_row`]) is halved until each refused row is alone, so every other row is written, and a refused
/// row is written once more as `clean` makes it, or else set aside (logged with
/// `describe`, which must not hold secrets, and counted in
/// `berth_store_rows_set_aside_total{writer}`).
pub async fn write_isolating<T: Clone + PartialEq + Send + Sync>(
    writer: &'static str,
    sink: &mut dyn BatchSink<T>,
    rows: Vec<T>,
    clean: fn(&T) -> T,
    describe: &(dyn Fn(&T) -> String + Sync),
) -> Written {
    let mut written = Written::default();
    // A stack of batches still to write, the next one on top: order is kept.
    let mut batches = vec![rows];
    while let Some(mut batch) = batches.pop() {
        if batch.is_empty() {
            continue;
        }
        let Err(e) = insert_waiting(writer, sink, &batch).await else {
            continue;
        };
        if batch.len() > 1 {
            let second = batch.split_off(batch.len() / 2);
            batches.push(second);
            batches.push(batch);
            continue;
        }
        let Some(row) = batch.pop() else { continue };
        let cleaned = clean(&row);
        if cleaned != row
            && insert_waiting(writer, sink, std::slice::from_ref(&cleaned))
                .await
                .is_ok()
        {
            written.cleaned += 1;
            tracing::warn!(writer, row = %describe(&row),
                "a row with control characters in its text was stored with them removed");
            continue;
        }
        written.set_aside += 1;
        metrics::counter!("berth_store_rows_set_aside_total", "writer" => writer).increment(1);
        tracing::error!(writer, row = %describe(&row), error = %e,
            "the store refused a row; it is set aside (not retried) so that the others are written");
    }
    written
}

/// Inserts `batch`, waiting out a store that is down; answers the store's refusal of it.
async fn insert_waiting<T: Sync>(
    writer: &'static str,
    sink: &mut dyn BatchSink<T>,
    batch: &[T],
) -> Result<(), StoreError> {
    let mut delay = Duration::from_millis(50);
    let mut refused = 0;
    loop {
        match sink.insert(batch).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_missing_tenant() => {
                tracing::warn!(
                    writer,
                    rows = batch.len(),
                    "rows of a deleted tenant dropped"
                );
                return Ok(());
            }
            Err(e) if e.is_refused_row() => {
                refused += 1;
                if refused >= REFUSED_TRIES {
                    return Err(e);
                }
            }
            // Anything else (the store down, a connection cut mid-write, a conflict) may
            // pass: waited out, however long, never a reason to set rows aside.
            Err(e) => {
                tracing::warn!(writer, rows = batch.len(), error = %e,
                    "write failed; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// `s` without control characters (NUL, which PostgreSQL refuses in text, among them).
pub fn without_controls(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// `v` with control characters removed from every string in it, keys included.
pub fn json_without_controls(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(without_controls(s)),
        Value::Array(a) => Value::Array(a.iter().map(json_without_controls).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (without_controls(k), json_without_controls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
