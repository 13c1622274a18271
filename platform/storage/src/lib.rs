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

/// How many parameters an `IN` list of `n` values is written with: `n` rounded up to a power of
/// two, the last value bound again in the places left. Lists of many lengths then share a few
/// statements, each prepared once per connection and planned once, instead of one per length.
#[must_use]
pub fn in_list_width(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// Milliseconds since the Unix epoch, the one time representation stored in databases.
#[must_use]
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::in_list_width;

    #[test]
    fn in_lists_are_written_at_a_few_widths() {
        for (n, width) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (5, 8),
            (100, 128),
            (128, 128),
            (200, 256),
        ] {
            assert_eq!(in_list_width(n), width, "{n} values");
        }
    }
}
