//! Storage errors, and the one place where database error codes are classified.

/// What went wrong talking to a service's database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique or primary-key constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Serialization failure, deadlock or a busy SQLite file: the same work may succeed if retried.
    #[error("transient database error: {0}")]
    Transient(#[source] sqlx::Error),
    /// The database cannot be reached, or the pool had no connection in time.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// The physical commit of a group of transactions failed: none of the group's work is kept.
    #[error("commit failed: {message}")]
    CommitFailed { message: String, transient: bool },
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("migration {version} ({name}) of {service}: {reason}")]
    Migration {
        service: String,
        version: i64,
        name: String,
        reason: String,
    },
}

impl StorageError {
    /// True when retrying the same transaction may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Transient(_) | Self::Unavailable(_) | Self::CommitFailed { transient: true, .. }
        )
    }

    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

/// SQLSTATEs (PostgreSQL) and result codes (SQLite) that mean "try again".
const TRANSIENT_CODES: &[&str] = &[
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "55P03", // lock_not_available
    "5",     // SQLITE_BUSY
    "6",     // SQLITE_LOCKED
    "261",   // SQLITE_BUSY_RECOVERY
    "517",   // SQLITE_BUSY_SNAPSHOT
    "773",   // SQLITE_BUSY_TIMEOUT
];

/// True when the same transaction may succeed if retried (what [`StorageError::is_transient`]
/// says of the error converted).
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            !db.is_unique_violation() && db.code().is_some_and(|c| TRANSIENT_CODES.contains(&c.as_ref()))
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        _ => false,
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    let what = db
                        .constraint()
                        .map_or_else(|| db.message().to_owned(), str::to_owned);
                    return Self::Conflict(what);
                }
                if db.code().is_some_and(|c| TRANSIENT_CODES.contains(&c.as_ref())) {
                    return Self::Transient(error);
                }
                Self::Database(error)
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable(error)
            }
            _ => Self::Database(error),
        }
    }
}
