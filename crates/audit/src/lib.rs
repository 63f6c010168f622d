//! The per-tenant audit hash chain: how an entry's hash is computed and how a chain is verified.
//!
//! Each entry's hash covers its tenant, sequence number, time, actor, action, target,
//! details and the previous entry's hash, so editing, deleting or reordering any stored
//! row breaks every hash after it. Pure logic; the store persists entries.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash that precedes the first entry of every chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a caller supplies to append an entry; the store assigns `seq`, `at` and `hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

impl NewEntry {
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        NewEntry {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            details,
        }
    }
}

/// A stored entry as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Computes the hash of an entry from its fields and its predecessor's hash.
///
/// Fields are length-prefixed so that no two different entries serialise alike.
pub fn entry_hash(
    tenant: &str,
    seq: i64,
    at_ms: i64,
    entry: &NewEntry,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    let details = entry.details.to_string();
    for part in [
        tenant.as_bytes(),
        &seq.to_be_bytes(),
        &at_ms.to_be_bytes(),
        entry.actor.as_bytes(),
        entry.action.as_bytes(),
        entry.target.as_bytes(),
        details.as_bytes(),
        prev_hash.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// The outcome of verifying a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub ok: bool,
    pub entries: u64,
    /// Hash of the last entry (or the genesis hash for an empty chain).
    pub head: String,
    /// The first sequence number where the chain breaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Walks a tenant's entries in `seq` order and reports the first break: a gap in the
/// sequence (a deleted row), a wrong `prev_hash` (reordering) or a wrong hash (an edit).
pub fn verify<'a>(tenant: &str, entries: impl IntoIterator<Item = &'a Entry>) -> Verification {
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut count = 0;
    for e in entries {
        let fail = |reason: &str| Verification {
            ok: false,
            entries: count,
            head: prev.clone(),
            first_bad_seq: Some(expected_seq.min(e.seq)),
            reason: Some(reason.to_owned()),
        };
        if e.seq != expected_seq {
            return fail("sequence gap: an entry is missing");
        }
        if e.prev_hash != prev {
            return fail("previous-hash link does not match");
        }
        let fields = NewEntry {
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            details: e.details.clone(),
        };
        if entry_hash(tenant, e.seq, e.at_ms, &fields, &prev) != e.hash {
            return fail("entry content does not match its hash");
        }
        prev = e.hash.clone();
        expected_seq += 1;
        count += 1;
    }
    Verification {
        ok: true,
        entries: count,
        head: prev,
        first_bad_seq: None,
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(tenant: &str, n: i64) -> Vec<Entry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let ne = NewEntry::new("operator", "key.create", format!("key_{seq}"), json!({"n": seq}));
                let hash = entry_hash(tenant, seq, 1000 + seq, &ne, &prev);
                let e = Entry {
                    seq,
                    at_ms: 1000 + seq,
                    actor: ne.actor,
                    action: ne.action,
                    target: ne.target,
                    details: ne.details,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain("ten_a", 5);
        let v = verify("ten_a", &c);
        assert!(v.ok);
        assert_eq!(v.entries, 5);
        assert_eq!(v.head, c[4].hash);
        assert!(verify("ten_a", &[]).ok);
    }

    #[test]
    fn edit_is_detected_at_its_seq() {
        let mut c = chain("ten_a", 5);
        c[2].details = json!({"n": 99});
        let v = verify("ten_a", &c);
        assert!(!v.ok);
        assert_eq!(v.first_bad_seq, Some(3));
    }

    #[test]
    fn deletion_is_detected() {
        let mut c = chain("ten_a", 5);
        c.remove(1);
        let v = verify("ten_a", &c);
        assert_eq!(v.first_bad_seq, Some(2));
    }

    #[test]
    fn chain_is_bound_to_its_tenant() {
        let c = chain("ten_a", 2);
        assert_eq!(verify("ten_b", &c).first_bad_seq, Some(1));
    }
}
