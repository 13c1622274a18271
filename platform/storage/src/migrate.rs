//! Per-service schema migrations.
//!
//! Each migration runs once, in the order listed (a service lists a migration of its own after
//! the platform's when it reads their tables), in its own transaction together with the row that
//! records it. On PostgreSQL an advisory lock makes replicas that start together take turns; on
//! SQLite the write lock does the same. A migration whose text changed after it was applied stops
//! start-up: history is never rewritten silently.

use std::time::Duration;

use sqlx::Executor as _;
use tokio::time::Instant;

use crate::db::{Backend, Db};
use crate::error::StorageError;

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    /// SQL that runs on both backends.
    pub sql: &'static str,
    /// A PostgreSQL variant, for the rare statement the two dialects spell differently.
    pub postgres_sql: Option<&'static str>,
}

impl Migration {
    /// Migration `version` called `name`, whose `sql` runs on both backends.
    #[must_use]
    pub const fn new(version: i64, name: &'static str, sql: &'static str) -> Self {
        Self {
            version,
            name,
            sql,
            postgres_sql: None,
        }
    }

    /// The same migration with its own PostgreSQL text.
    #[must_use]
    pub const fn with_postgres(self, postgres_sql: &'static str) -> Self {
        Self {
            postgres_sql: Some(postgres_sql),
            ..self
        }
    }

    fn sql_for(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Postgres => self.postgres_sql.unwrap_or(self.sql),
            Backend::Sqlite => self.sql,
        }
    }
}

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS _mercato_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Any 64-bit value fits in PostgreSQL's `bigint` advisory-lock key.
const MIGRATION_LOCK: i64 = 0x006d_6572_6361_746f;

/// FNV-1a: enough to notice an edited migration, no dependency needed.
fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// How long applying migrations waits for a database that another process keeps busy.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

/// Applies the migrations `db` has not seen yet and returns how many ran.
///
/// A process that crashed a moment ago, or a `mercato migrate` beside this one, may still hold
/// SQLite's write lock past the busy timeout: that is waited out (up to 30 s), so a restart
/// starts once the lock is free instead of failing to start.
///
/// # Errors
/// [`StorageError::Migration`] naming the migration that failed or was edited after it ran;
/// [`StorageError::Transient`] when the database stayed busy.
pub async fn migrate(db: &Db, service: &str, migrations: &[Migration]) -> Result<usize, StorageError> {
    let deadline = Instant::now() + BUSY_PATIENCE;
    let mut pause = Duration::from_millis(50);
    loop {
        match migrate_once(db, service, migrations).await {
            Err(error @ StorageError::Transient(_)) if Instant::now() < deadline => {
                tracing::warn!(service, %error, "database busy while applying migrations; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            result => return result,
        }
    }
}

async fn migrate_once(db: &Db, service: &str, migrations: &[Migration]) -> Result<usize, StorageError> {
    let fail = |m: &Migration, reason: String| StorageError::Migration {
        service: service.to_owned(),
        version: m.version,
        name: m.name.to_owned(),
        reason,
    };
    let mut applied = 0;
    for migration in migrations {
        let mut tx = db.begin().await?;
        if db.backend() == Backend::Postgres {
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        // `Executor::execute`, not `RawSql::execute`: the latter leaves this future not `Send`.
        tx.execute(sqlx::raw_sql(LEDGER)).await?;
        let sql = migration.sql_for(db.backend());
        let sum = checksum(sql);
        let existing: Option<(String,)> =
            sqlx::query_as("SELECT checksum FROM _mercato_migrations WHERE version = $1")
                .bind(migration.version)
                .fetch_optional(&mut *tx)
                .await?;
        match existing {
            Some((stored,)) if stored == sum => continue,
            Some(_) => {
                return Err(fail(migration, "was edited after it was applied".into()));
            }
            None => {}
        }
        tx.execute(sqlx::raw_sql(sql))
            .await
            .map_err(|e| fail(migration, e.to_string()))?;
        sqlx::query(
            "INSERT INTO _mercato_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(&sum)
        .bind(crate::now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            service,
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn checksum_changes_with_the_text() {
        assert_eq!(checksum("a"), checksum("a"));
        assert_ne!(
            checksum("CREATE TABLE a (x TEXT)"),
            checksum("CREATE TABLE a (y TEXT)")
        );
    }
}
