//! Connecting to a service's database.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor as _};
use tracing::Instrument as _;

use crate::error::StorageError;
use crate::group::{CommitCounters, Committer};
use crate::tx::Tx;

/// Pool and connection settings for one service's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` or `postgres://user@host:5432/database`.
    pub url: String,
    /// The pool's size; on SQLite the readers', beside the one writer connection.
    pub max_connections: u32,
    /// How long a caller waits for a connection; on SQLite also a writer for its turn.
    pub acquire_timeout_ms: u64,
    /// How long SQLite waits for a write lock that another process holds (this process's
    /// writers queue for their turn instead).
    pub sqlite_busy_timeout_ms: u64,
    /// SQLite's `synchronous`: `full` (every commit survives a power cut) or `normal` (WAL:
    /// commits survive a crash of the process, the last ones may not survive a power cut).
    pub sqlite_synchronous: SqliteSync,
}

/// How hard SQLite pushes each commit to the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    #[default]
    Full,
    Normal,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://{data_dir}/{service}.db?mode=rwc".into(),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            sqlite_busy_timeout_ms: 5_000,
            sqlite_synchronous: SqliteSync::Full,
        }
    }
}

/// The two supported engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a URL names.
    ///
    /// # Errors
    /// [`StorageError::Config`] for any other scheme.
    pub fn of_url(url: &str) -> Result<Self, StorageError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StorageError::Config(format!(
                "unsupported database url scheme in {:?}; use sqlite:// or postgres://",
                redact_url(url)
            )))
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A service's database: a pool and the backend behind it.
///
/// On SQLite, which admits one writer at a time, write transactions queue in the process for
/// one writer connection (a fair lock), so writers take turns in the order they asked instead
/// of sleeping in SQLite's busy handler, and the transactions queued meanwhile commit together
/// (group commit, see [`crate::group`]); readers keep their own pool.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    /// SQLite's one writer connection and its groups; `None` on PostgreSQL.
    committer: Option<Arc<Committer>>,
    backend: Backend,
    counters: CommitCounters,
}

impl Db {
    /// Connects, creating the SQLite file or the PostgreSQL database when it does not exist yet.
    ///
    /// # Errors
    /// [`StorageError::Config`] for a bad URL, [`StorageError::Unavailable`] when the server
    /// cannot be reached.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StorageError> {
        install_default_drivers();
        let backend = Backend::of_url(&config.url)?;
        match backend {
            Backend::Sqlite => prepare_sqlite_file(&config.url)?,
            Backend::Postgres => {
                ensure_postgres_database(&config.url, Duration::from_millis(config.acquire_timeout_ms))
                    .await?;
            }
        }
        let pool = pool_options(config, backend, config.max_connections.max(1))
            .connect(&config.url)
            .await?;
        let counters = CommitCounters::default();
        let committer = match backend {
            Backend::Sqlite => {
                let writer = pool_options(config, backend, 1).connect(&config.url).await?;
                Some(Arc::new(Committer::new(
                    writer,
                    Duration::from_millis(config.acquire_timeout_ms),
                    counters.clone(),
                )))
            }
            Backend::Postgres => None,
        };
        Ok(Self {
            pool,
            committer,
            backend,
            counters,
        })
    }

    /// Registers `mercato_db_transactions_total` and `mercato_db_commits_total` (write
    /// transactions committed, and the physical commits that made them durable: on SQLite one
    /// per group) in `registry`, usually a sub-registry labelled with the service.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "mercato_db_transactions",
            "Write transactions committed",
            self.counters.transactions.clone(),
        );
        registry.register(
            "mercato_db_commits",
            "Physical commits (on SQLite one per group of transactions, each an fsync with synchronous=full)",
            self.counters.commits.clone(),
        );
    }

    /// Write transactions committed and physical commits so far.
    #[must_use]
    pub fn commit_counts(&self) -> (u64, u64) {
        (self.counters.transactions.get(), self.counters.commits.get())
    }

    /// Writers queued for SQLite's writer right now (0 on PostgreSQL).
    #[must_use]
    pub fn writers_queued(&self) -> usize {
        self.committer.as_ref().map_or(0, |c| c.queued())
    }

    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for reads. On SQLite a statement that writes through it outside [`Db::begin`]
    /// does not queue with the transactions: it waits for the write lock in the busy handler.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that will write.
    ///
    /// On SQLite it waits its turn for the one writer connection (first come, first served,
    /// for at most `acquire_timeout_ms`) and joins the physical transaction open there, begun
    /// with the write lock up front (`BEGIN IMMEDIATE`), so it never fails upgrading a read lock
    /// and never sleeps on a database this process holds; the busy timeout is left for other
    /// processes.
    ///
    /// # Errors
    /// The database cannot be reached, or the writer was not free in time.
    pub async fn begin(&self) -> Result<Tx, StorageError> {
        // On SQLite most of a begin is the wait for the writer: the span shows it in the trace.
        let span = crate::span::database(self.backend, "BEGIN", "transaction", &tracing::Span::current());
        self.begin_now().instrument(span).await
    }

    async fn begin_now(&self) -> Result<Tx, StorageError> {
        match &self.committer {
            Some(committer) => Ok(Tx::member(committer.begin().await?)),
            None => Ok(Tx::own(self.pool.begin().await?, self.counters.clone())),
        }
    }

    /// A trivial round trip, for readiness.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Commits what the writer holds and closes every connection.
    pub async fn close(&self) {
        if let Some(committer) = &self.committer {
            committer.close().await;
        }
        self.pool.close().await;
    }
}

/// A pool of at most `max_connections` with the configured timeouts and, on SQLite, the
/// connection settings.
fn pool_options(config: &DatabaseConfig, backend: Backend, max_connections: u32) -> AnyPoolOptions {
    let busy = format!("PRAGMA busy_timeout = {}", config.sqlite_busy_timeout_ms);
    let synchronous = match config.sqlite_synchronous {
        SqliteSync::Full => "PRAGMA synchronous = FULL",
        SqliteSync::Normal => "PRAGMA synchronous = NORMAL",
    };
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .after_connect(move |conn, _| {
            let busy = busy.clone();
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL lets readers run beside the one writer; FULL sync (the default)
                    // makes every committed transaction survive a power cut, not only a crash.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute(synchronous).await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute(busy.as_str()).await?;
                    // Sorts, `IN` lists and savepoint journals in memory: as files each was an
                    // open, writes and an unlink in the temporary directory, several per second
                    // under load, for data that never outlives its statement or transaction.
                    conn.execute("PRAGMA temp_store = MEMORY").await?;
                }
                Ok(())
            })
        })
}

fn prepare_sqlite_file(url: &str) -> Result<(), StorageError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if !url.contains("mode=") {
        return Err(StorageError::Config(format!(
            "sqlite url {url:?} needs ?mode=rwc so the file is created on first start"
        )));
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", parent.display())))?;
    }
    Ok(())
}

/// Splits `postgres://…/name?opts` into the URL of the maintenance database and `name`.
fn split_postgres_url(url: &str) -> Option<(String, String)> {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://")? + 3;
    let slash = base[scheme_end..].find('/')? + scheme_end;
    let name = base[slash + 1..].to_owned();
    let mut admin = format!("{}/postgres", &base[..slash]);
    if let Some(q) = query {
        admin.push('?');
        admin.push_str(q);
    }
    Some((admin, name))
}

/// Database names we create are plain identifiers, so quoting them is safe.
fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

async fn ensure_postgres_database(url: &str, acquire_timeout: Duration) -> Result<(), StorageError> {
    let Some((admin_url, name)) = split_postgres_url(url) else {
        return Err(StorageError::Config(format!(
            "postgres url {:?} names no database",
            redact_url(url)
        )));
    };
    if name == "postgres" {
        return Ok(());
    }
    if !is_plain_identifier(&name) {
        return Err(StorageError::Config(format!(
            "database name {name:?} must be lower-case letters, digits and underscores"
        )));
    }
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(acquire_timeout)
        .connect(&admin_url)
        .await?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&admin)
        .await?
        .is_some();
    if !exists {
        let create = format!("CREATE DATABASE \"{name}\"");
        match admin.execute(create.as_str()).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our create.
            Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await;
    Ok(())
}

/// The URL with any password replaced, fit for logs and `mercato config`.
#[must_use]
pub fn redact_url(url: &str) -> String {
    match userinfo_span(url) {
        Some((_, colon, at)) => format!("{}***{}", &url[..=colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// `url` without its `user:password@`, and the user and password, for clients that take
/// credentials apart from the address (a NATS client ignores them in the URL).
#[must_use]
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    match userinfo_span(url) {
        Some((start, colon, at)) => (
            format!("{}{}", &url[..start], &url[at + 1..]),
            Some((url[start..colon].to_owned(), url[colon + 1..at].to_owned())),
        ),
        None => (url.to_owned(), None),
    }
}

/// Where `user:password` stands in `url`: its start, its colon and the `@` after it.
fn userinfo_span(url: &str) -> Option<(usize, usize, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some((start, start + colon, start + at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("sqlite://.mercato/x.db?mode=rwc"),
            "sqlite://.mercato/x.db?mode=rwc"
        );
    }

    #[test]
    fn credentials_come_apart_from_the_address() {
        assert_eq!(
            split_credentials("nats://orders:pw@h:4222"),
            (
                "nats://h:4222".to_owned(),
                Some(("orders".to_owned(), "pw".to_owned()))
            )
        );
        assert_eq!(
            split_credentials("nats://h:4222"),
            ("nats://h:4222".to_owned(), None)
        );
        assert_eq!(
            split_credentials("nats://u@h:4222"),
            ("nats://u@h:4222".to_owned(), None)
        );
    }

    #[test]
    fn splits_the_maintenance_url_from_the_database_name() {
        let (admin, name) = split_postgres_url("postgres://u@h:5432/orders?sslmode=disable").unwrap();
        assert_eq!(admin, "postgres://u@h:5432/postgres?sslmode=disable");
        assert_eq!(name, "orders");
    }

    #[test]
    fn unknown_schemes_are_refused_with_the_url() {
        let err = Backend::of_url("mysql://x").unwrap_err();
        assert!(err.to_string().contains("mysql://x"));
    }

    #[test]
    fn only_plain_identifiers_are_created() {
        assert!(is_plain_identifier("mercato_identity"));
        assert!(!is_plain_identifier("x\"; DROP"));
        assert!(!is_plain_identifier(""));
    }
}
