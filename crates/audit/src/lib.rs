//! The per-tenant audit hash chain: how an entry's hash is computed and how a chain is verified.
//!
//! Each entry's hash covers its tenant, sequence number, time, actor, action, target,
//! details and the previous entry's hash, so editing, deleting or reordering any stored
//! row breaks every hash after it. Pure logic; the store persists entries.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash that precedes the first entry of every chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a caller supplies to append an entry; the store assigns `seq` and `hash`, and
/// `at` unless the entry says when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    /// When the audited thing happened, for entries written some time after it (the
    /// write-behind of tool calls); `None` is the time of the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
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
            at_ms: None,
        }
    }

    /// The same entry, stamped with the time it happened.
    pub fn at(mut self, at_ms: i64) -> Self {
        self.at_ms = Some(at_ms);
        self
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
pub fn entry_hash(tenant: &str, seq: i64, at_ms: i64, entry: &NewEntry, prev_hash: &str) -> String {
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

/// Checks a chain incrementally, so a long chain can be read and verified page by page.
pub struct Verifier<'t> {
    tenant: &'t str,
    prev: String,
    expected_seq: i64,
    count: u64,
    failure: Option<(i64, &'static str)>,
}

impl<'t> Verifier<'t> {
    pub fn new(tenant: &'t str) -> Self {
        Verifier {
            tenant,
            prev: GENESIS.to_owned(),
            expected_seq: 1,
            count: 0,
            failure: None,
        }
    }

    /// Feeds the next entry (in `seq` order); returns false once the chain is broken.
    /// Breaks are: a gap in the sequence (a deleted row), a wrong `prev_hash`
    /// (reordering) or a wrong hash (an edit).
    pub fn push(&mut self, e: &Entry) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let reason = if e.seq != self.expected_seq {
            Some("sequence gap: an entry is missing")
        } else if e.prev_hash != self.prev {
            Some("previous-hash link does not match")
        } else {
            let fields = NewEntry {
                actor: e.actor.clone(),
                action: e.action.clone(),
                target: e.target.clone(),
                details: e.details.clone(),
                at_ms: None,
            };
            (entry_hash(self.tenant, e.seq, e.at_ms, &fields, &self.prev) != e.hash)
                .then_some("entry content does not match its hash")
        };
        if let Some(reason) = reason {
            self.failure = Some((self.expected_seq.min(e.seq), reason));
            return false;
        }
        self.prev = e.hash.clone();
        self.expected_seq += 1;
        self.count += 1;
        true
    }

    pub fn finish(self) -> Verification {
        Verification {
            ok: self.failure.is_none(),
            entries: self.count,
            head: self.prev,
            first_bad_seq: self.failure.map(|f| f.0),
            reason: self.failure.map(|f| f.1.to_owned()),
        }
    }
}

/// Verifies a whole chain held in memory.
pub fn verify<'a>(tenant: &str, entries: impl IntoIterator<Item = &'a Entry>) -> Verification {
    let mut v = Verifier::new(tenant);
    for e in entries {
        if !v.push(e) {
            break;
        }
    }
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(tenant: &str, n: i64) -> Vec<Entry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let ne = NewEntry::new(
                    "operator",
                    "key.create",
                    format!("key_{seq}"),
                    json!({"n": seq}),
                );
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

    /// Details are stored as JSON text and hashed again when verified: every float must read
    /// back as the number that was hashed (serde_json's `float_roundtrip`).
    #[test]
    fn details_with_floats_hash_the_same_after_a_round_trip() {
        let ne = NewEntry::new(
            "key:k",
            "tool.call",
            "crm__x",
            json!({"latency": 0.48241100000000003, "usd": 1e-9}),
        );
        let stored = serde_json::to_string(&ne.details).unwrap();
        let back = NewEntry::new(
            "key:k",
            "tool.call",
            "crm__x",
            serde_json::from_str(&stored).unwrap(),
        );
        assert_eq!(
            entry_hash("ten_a", 1, 5, &ne, GENESIS),
            entry_hash("ten_a", 1, 5, &back, GENESIS)
        );
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
