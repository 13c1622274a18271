//! Each Mercato service owns one database and reaches it only through this crate.
//!
//! Embedded mode uses a SQLite file per service (WAL, one writer at a time, readers beside it); distributed mode uses
//! PostgreSQL, a database per service. Both are reached through `sqlx::Any`, so a service writes its
//! SQL once: portable types only (`TEXT`, `BIGINT`, `DOUBLE PRECISION`), `$1` placeholders, and
//! times as Unix milliseconds.
//!
//! - [`db`]: connecting, pool settings, write transactions (on SQLite queued in the process for
//!   the one writer connection), health ping, commit counters.
//! - [`group`]: group commit on SQLite: queued write transactions share one physical commit.
//! - [`Tx`]: a write transaction on either backend.
//! - [`migrate`]: per-service migrations applied in order, once, under a lock.
//! - [`error`]: one error enum; database codes are classified here and nowhere else.
//! - [`span`]: spans of database work with OpenTelemetry's database attributes.
#![forbid(unsafe_code)]

pub mod db;
pub mod error;
pub mod group;
pub mod migrate;
pub mod span;
mod tx;

pub use db::{Backend, DatabaseConfig, Db, SqliteSync};
pub use error::StorageError;
pub use migrate::{Migration, migrate};
pub use sqlx;
pub use tx::Tx;

/// Connects to a service's database and applies its migrations: what every service does first.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn open(
    config: &DatabaseConfig,
    service: &str,
    migrations: &[Migration],
) -> Result<Db, StorageError> {
    let db = Db::connect(config).await?;
    migrate::migrate(&db, service, migrations).await?;
    Ok(db)
}

/// Milliseconds since the Unix epoch, the one time representation stored in databases.
#[must_use]
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
