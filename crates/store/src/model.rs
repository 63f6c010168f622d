//! Records the store reads and writes.

use berth_core::{Role, TenantId};

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub plan: String,
    pub suspended: bool,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub plan: Option<String>,
    pub suspended: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub agent: Option<String>,
    /// The first characters of the token, shown so a person can tell keys apart.
    pub prefix: String,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub agent: Option<String>,
    pub prefix: String,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub hash: String,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// What a token hash resolves to: the key and its tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyGrant {
    pub tenant: Tenant,
    pub key: ApiKey,
}

/// A per-tenant data key, wrapped (encrypted) under the master key.
#[derive(Debug, Clone, PartialEq)]
pub struct WrappedKey {
    pub nonce: Vec<u8>,
    pub wrapped: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SealedSecret {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecretMeta {
    pub name: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// `?limit=&cursor=` of a list endpoint; the cursor is the last item's sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    pub limit: i64,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: i64 = 50;
    pub const MAX_LIMIT: i64 = 500;

    pub fn first(limit: i64) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest::first(Self::DEFAULT_LIMIT)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says there is more.
    pub(crate) fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(key)
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}
