//! The store's error type: what callers can act on (not found, conflict) vs backend failure.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// True when a write names a tenant that no longer exists (it was deleted while the
    /// write waited): retrying cannot succeed.
    pub fn is_missing_tenant(&self) -> bool {
        matches!(self, StoreError::Backend(sqlx::Error::Database(db)) if db.is_foreign_key_violation())
    }

    /// True when the database cannot be reached (connections refused or cut, the pool
    /// exhausted or closed): the request may succeed later, so it is answered 503, not 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Backend(
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        )
    }

    /// True when the database refused a write for what it holds (PostgreSQL's data
    /// exceptions and integrity violations, SQLSTATE classes 22 and 23, such as a NUL byte
    /// in text; SQLite's constraint and type errors; or rows read back corrupt): writing the
    /// same again cannot succeed. Every other failure (a cut connection, a protocol error,
    /// a serialization conflict) may pass, so background writers retry it rather than set
    /// the row aside.
    pub fn is_refused_row(&self) -> bool {
        match self {
            StoreError::Corrupt(_) => true,
            StoreError::Backend(sqlx::Error::Database(db)) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                code.starts_with("22")
                    || code.starts_with("23")
                    // SQLite: SQLITE_CONSTRAINT (19) and its extended codes, SQLITE_MISMATCH (20).
                    || code == "19"
                    || code == "20"
                    || (code.len() > 2 && code.parse::<u32>().is_ok_and(|c| c & 0xff == 19))
            }
            _ => false,
        }
    }

    /// Maps a unique-constraint violation to `Conflict`, keeping every other error as is.
    pub(crate) fn from_write(err: sqlx::Error, what: &str) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(what.to_owned())
            }
            _ => StoreError::Backend(err),
        }
    }
}
