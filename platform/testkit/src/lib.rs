//! Helpers for Mercato's integration tests.
//!
//! - [`TestDatabase`]: a fresh, private database per test: a new SQLite file in a temporary
//!   directory, or a new PostgreSQL database named by a UUID, dropped when the test ends.
//! - [`backend_tests!`]: runs one async test body once per backend, as `sqlite::name` and
//!   `postgres::name`, so a filter on `postgres` selects or leaves out the PostgreSQL suite.
//! - [`eventually`]: polls a condition until it holds or a deadline passes; tests never sleep.
//!   [`join_all`]: waits for a set of tasks within [`PATIENCE`]; [`joined`]: for one task.
//! - [`nats::NatsServer`]: a private NATS JetStream server per test, stoppable and restartable.
//! - [`auth::TestIssuer`]: a JWKS endpoint and tokens for any subject and roles.
//! - [`redis::KeyPrefix`]: a Redis key namespace per test, emptied when the test ends;
//!   [`redis::RedisServer`]: a private Redis a test can stop and start again.
//! - [`service::Backing`]: what a service under test runs on (database, the backend's bus, a
//!   token issuer, settings for port 0); [`service::Instance`]: a running instance.
//! - [`load::Load`]: loops of GETs under which a test kills, switches or restarts something.
//! - [`listener::Listener`]: what a service published, read as a consumer group of the test's.
//! - [`publish::publish_at`]: an event put on the bus as another service's relay would.
//! - [`outbox::event_types`]: what a service wrote to its outbox for a stream.
//! - [`ready::Readiness`]: a `/ready` answer and its checks.
//! - [`metrics::Exposition`]: a `/metrics` answer as samples (name, labels, value, exemplar).
//! - [`event::Noted`]: the event the platform's bus, pipeline and event-store suites use.
//! - [`json::field_of_each`]: one string field of every element of a JSON array.
//! - [`problem`]: assertions on problem+json answers; [`PATIENCE`]: the one bound on waiting.
#![forbid(unsafe_code)]

pub mod auth;
pub mod event;
pub mod json;
pub mod listener;
pub mod load;
pub mod metrics;
pub mod nats;
pub mod outbox;
pub mod problem;
pub mod publish;
pub mod ready;
pub mod redis;
pub mod service;
pub mod tls;

/// How long any test waits for something that should happen, before it fails instead of
/// hanging: generous, because CI machines are small and busy.
pub const PATIENCE: Duration = Duration::from_secs(30);

use std::future::Future;
use std::time::Duration;

use sqlx::Connection as _;

/// The storage backends a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use: `MERCATO_TEST_POSTGRES_URL`, or the local default.
#[must_use]
pub fn postgres_admin_url() -> String {
    std::env::var("MERCATO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: TestBackend,
    dir: tempfile::TempDir,
    /// PostgreSQL databases to drop when the test ends: this one and those handed out by
    /// [`TestDatabase::service_url`].
    postgres_names: std::sync::Mutex<Vec<String>>,
}

impl TestDatabase {
    /// Creates an empty database on `backend`.
    ///
    /// # Panics
    /// When PostgreSQL is asked for and cannot be reached: a backend suite fails, never skips.
    pub async fn new(backend: TestBackend) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        match backend {
            TestBackend::Sqlite => {
                let path = dir.path().join("test.db");
                let url = format!("sqlite://{}?mode=rwc", path.display());
                Self {
                    url,
                    backend,
                    dir,
                    postgres_names: std::sync::Mutex::default(),
                }
            }
            TestBackend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("mercato_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} is needed for this test and is not reachable: {e}")
                });
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let url = format!("{}/{name}", base_of(&admin));
                Self {
                    url,
                    backend,
                    dir,
                    postgres_names: std::sync::Mutex::new(vec![name]),
                }
            }
        }
    }

    /// The URL to hand to the service under test.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A further database for `service` on the same backend, cleaned up with this one: a file
    /// beside this database, or a PostgreSQL database that the service creates when it connects.
    #[must_use]
    pub fn service_url(&self, service: &str) -> String {
        match self.backend {
            TestBackend::Sqlite => {
                format!(
                    "sqlite://{}?mode=rwc",
                    self.dir.path().join(format!("{service}.db")).display()
                )
            }
            TestBackend::Postgres => {
                let (base, name) = self
                    .url
                    .rsplit_once('/')
                    .unwrap_or((self.url.as_str(), "mercato_test"));
                let extra = format!("{name}_{service}");
                self.postgres_names
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(extra.clone());
                format!("{base}/{extra}")
            }
        }
    }

    #[must_use]
    pub fn backend(&self) -> TestBackend {
        self.backend
    }

    /// A scratch directory that lives exactly as long as the database (keys, data dirs).
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

fn base_of(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(base, _)| base)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let names = std::mem::take(
            &mut *self
                .postgres_names
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        drop_postgres_databases(names);
    }
}

/// Drops the PostgreSQL databases `names`, best effort: a test's cleanup never fails the test.
///
/// Made for `Drop`, which runs outside async context: a short-lived runtime on its own thread
/// does the I/O.
pub fn drop_postgres_databases(names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let admin = postgres_admin_url();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
            for name in names {
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::query(&sql).execute(&mut conn).await;
            }
            conn.close().await.ok()
        })
    })
    .join();
}

/// Waits for every task in `set`, failing the test if one panics or they take longer than
/// [`PATIENCE`].
///
/// # Panics
/// When a task panics, or they are not all done within [`PATIENCE`].
pub async fn join_all<T: 'static>(mut set: tokio::task::JoinSet<T>) -> Vec<T> {
    tokio::time::timeout(PATIENCE, async {
        let mut done = Vec::with_capacity(set.len());
        while let Some(joined) = set.join_next().await {
            done.push(joined.expect("task panicked"));
        }
        done
    })
    .await
    .expect("concurrent tasks finished in time")
}

/// What the task `handle` returned, waited for within [`PATIENCE`].
///
/// # Panics
/// When the task does not end in time (the message names `what`), or panicked.
pub async fn joined<T>(what: &str, handle: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(PATIENCE, handle)
        .await
        .unwrap_or_else(|_| panic!("{what} within {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("{what}: the task failed: {e}"))
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `deadline`.
///
/// # Panics
/// When the deadline passes first.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Declares each named `async fn name(backend: TestBackend)` as two tests, one per backend.
///
/// With `spawn => a, b; c, d` the tests `a` and `b` take what `spawn(backend)` starts (the
/// service under test, most suites' first line) and `c` and `d`, listed after the `;`, still
/// take the backend, for the few that start the service their own way.
#[macro_export]
macro_rules! backend_tests {
    (@module $module:ident $variant:ident $($open:path => [$($name:ident),*])*) => {
        mod $module {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($open($crate::TestBackend::$variant).await).await;
                }
            )*)*
        }
    };
    (@both $($groups:tt)*) => {
        $crate::backend_tests!(@module sqlite Sqlite $($groups)*);
        $crate::backend_tests!(@module postgres Postgres $($groups)*);
    };
    ($spawn:ident => $($started:ident),+ $(; $($name:ident),+)? $(,)?) => {
        $crate::backend_tests!(@both
            super::$spawn => [$($started),+]
            ::std::future::ready => [$($($name),+)?]
        );
    };
    ($($name:ident),+ $(,)?) => {
        $crate::backend_tests!(@both ::std::future::ready => [$($name),+]);
    };
}
