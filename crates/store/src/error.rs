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
