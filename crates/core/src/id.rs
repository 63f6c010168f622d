//! Opaque, prefixed identifiers (`ten_…`, `key_…`) and their strict parsing.

use rand::Rng;
use std::fmt;

/// The kinds of ids Berth hands out; the prefix tells a reader what an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Tenant,
    Key,
    Run,
    Thread,
    Approval,
    Event,
    Request,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Tenant => "ten_",
            IdKind::Key => "key_",
            IdKind::Run => "run_",
            IdKind::Thread => "thr_",
            IdKind::Approval => "apr_",
            IdKind::Event => "evt_",
            IdKind::Request => "req_",
        }
    }
}

/// Length of the random part of an id: 20 characters of base32 is 100 bits.
const RANDOM_LEN: usize = 20;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A validated id of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    pub fn new(kind: IdKind) -> Self {
        let mut rng = rand::thread_rng();
        let mut s = String::with_capacity(kind.prefix().len() + RANDOM_LEN);
        s.push_str(kind.prefix());
        for _ in 0..RANDOM_LEN {
            s.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
        }
        Id(s)
    }

    /// Parses `raw` as an id of `kind`; anything else (wrong prefix, odd characters,
    /// wrong length) is refused, so a malformed id never reaches a query.
    pub fn parse(kind: IdKind, raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix(kind.prefix())?;
        if rest.len() != RANDOM_LEN || !rest.bytes().all(|b| ALPHABET.contains(&b)) {
            return None;
        }
        Some(Id(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh random secret of `bytes` bytes, hex encoded (used for API keys and tokens).
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn new_ids_parse_back() {
        for kind in [IdKind::Tenant, IdKind::Key, IdKind::Run, IdKind::Request] {
            let id = Id::new(kind);
            assert_eq!(Id::parse(kind, id.as_str()), Some(id.clone()));
            assert!(id.as_str().starts_with(kind.prefix()));
        }
    }

    #[test]
    fn wrong_prefix_is_refused() {
        let id = Id::new(IdKind::Tenant);
        assert_eq!(Id::parse(IdKind::Key, id.as_str()), None);
        assert_eq!(Id::parse(IdKind::Tenant, "ten_"), None);
        assert_eq!(Id::parse(IdKind::Tenant, "ten_AAAAAAAAAAAAAAAAAAAA"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_only_accepts_canonical(s in "\\PC*") {
            if let Some(id) = Id::parse(IdKind::Key, &s) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert_eq!(s.len(), 4 + RANDOM_LEN);
            }
        }
    }
}
