//! Helpers shared by the event store tests.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use mercato_eventstore::{
    AppendResult, Applied, ExpectedVersion, Projection, ProjectionError, RecordedEvent, append,
};
use mercato_messaging::{Context, Envelope, outbox};
use mercato_storage::sqlx;
use mercato_storage::{DatabaseConfig, Db, Migration, Tx, migrate};
pub use mercato_testkit::event::Noted;
use mercato_testkit::{TestBackend, TestDatabase};

pub use mercato_testkit::{PATIENCE, join_all};

/// The read tables of the test projections.
const READ_MODELS: Migration = Migration::new(
    1,
    "test_read_models",
    "CREATE TABLE stream_counts (
              stream_id TEXT PRIMARY KEY,
              events BIGINT NOT NULL,
              last_version BIGINT NOT NULL,
              last_position BIGINT NOT NULL,
              total BIGINT NOT NULL
          );
          CREATE TABLE seen (
              projection TEXT NOT NULL,
              event_id TEXT NOT NULL,
              position BIGINT NOT NULL,
              applied BIGINT NOT NULL
          );",
);

/// A fresh database with the outbox, the event store and the test read models.
pub struct Store {
    pub db: Db,
    _database: TestDatabase,
}

/// Every migration of the event store, as services list them.
pub const MIGRATIONS: &[Migration] = &[
    outbox::MIGRATION,
    mercato_eventstore::MIGRATION,
    mercato_eventstore::COMMIT_ORDER,
    READ_MODELS,
];

/// The schema as it was before the global log was ordered by commit.
pub const MIGRATIONS_BEFORE_COMMIT_ORDER: &[Migration] =
    &[outbox::MIGRATION, mercato_eventstore::MIGRATION, READ_MODELS];

pub async fn store(backend: TestBackend) -> Store {
    store_with(backend, MIGRATIONS).await
}

pub async fn store_with(backend: TestBackend, migrations: &[Migration]) -> Store {
    let database = TestDatabase::new(backend).await;
    let db = Db::connect(&DatabaseConfig {
        url: database.url().to_owned(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("connect to {}: {e}", database.url()));
    migrate(&db, "test", migrations).await.expect("migrate");
    Store {
        db,
        _database: database,
    }
}

pub fn noted(stream_id: &str, n: i64) -> Envelope {
    Envelope::new("tests", stream_id, &Noted { n }, &Context::default()).expect("envelope")
}

pub fn noted_many(stream_id: &str, ns: impl IntoIterator<Item = i64>) -> Vec<Envelope> {
    ns.into_iter().map(|n| noted(stream_id, n)).collect()
}

/// Appends in a transaction of its own and commits.
pub async fn append_committed(
    db: &Db,
    stream_id: &str,
    expected: ExpectedVersion,
    events: Vec<Envelope>,
) -> AppendResult {
    let mut tx = db.begin().await.expect("begin");
    let appended = append(&mut tx, stream_id, expected, events)
        .await
        .unwrap_or_else(|e| panic!("append to {stream_id}: {e}"));
    tx.commit().await.expect("commit");
    appended
}

pub async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Counts events and sums their numbers per stream; can be told to fail on a version.
#[derive(Debug, Default)]
pub struct StreamCounts {
    fail_at_version: Option<i64>,
    failures_left: AtomicU32,
    failures: AtomicU32,
}

/// One row of `stream_counts`: stream, events, last version, last position, total.
pub type CountRow = (String, i64, i64, i64, i64);

impl StreamCounts {
    pub const NAME: &'static str = "stream_counts";

    pub fn new() -> Self {
        Self::default()
    }

    /// Fails on events with this version `times` times, then applies them.
    pub fn failing_at(version: i64, times: u32) -> Self {
        Self {
            fail_at_version: Some(version),
            failures_left: AtomicU32::new(times),
            failures: AtomicU32::new(0),
        }
    }

    pub fn heal(&self) {
        self.failures_left.store(0, Ordering::SeqCst);
    }

    /// How many failures it has injected.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::SeqCst)
    }

    pub async fn rows(db: &Db) -> Vec<CountRow> {
        sqlx::query_as(
            "SELECT stream_id, events, last_version, last_position, total FROM stream_counts ORDER BY stream_id",
        )
        .fetch_all(db.pool())
        .await
        .expect("read stream_counts")
    }

    fn should_fail(&self, event: &RecordedEvent) -> bool {
        self.fail_at_version == Some(event.version)
            && self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
                .is_ok()
    }
}

impl Projection for StreamCounts {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a RecordedEvent) -> Applied<'a> {
        Box::pin(async move {
            if self.should_fail(event) {
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(ProjectionError::Failed(format!(
                    "injected failure at version {}",
                    event.version
                )));
            }
            let Noted { n } = event.envelope.decode()?;
            sqlx::query(
                "INSERT INTO stream_counts (stream_id, events, last_version, last_position, total)
                 VALUES ($1, 1, $2, $3, $4)
                 ON CONFLICT (stream_id) DO UPDATE SET
                     events = stream_counts.events + 1,
                     last_version = excluded.last_version,
                     last_position = excluded.last_position,
                     total = stream_counts.total + excluded.total",
            )
            .bind(&event.envelope.stream_id)
            .bind(event.version)
            .bind(event.position)
            .bind(n)
            .execute(&mut **tx)
            .await?;
            Ok(())
        })
    }

    fn reset<'a>(&'a self, tx: &'a mut Tx) -> Applied<'a> {
        Box::pin(async move {
            sqlx::query("DELETE FROM stream_counts")
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }
}

/// Records every event it is given, in the order it applied them, with no uniqueness, so a
/// duplicate shows as a second row.
#[derive(Debug)]
pub struct Seen {
    name: String,
    applied: AtomicI64,
}

impl Seen {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            applied: AtomicI64::new(0),
        }
    }

    /// The event ids it recorded, in the order it applied them, duplicates included.
    pub async fn event_ids(&self, db: &Db) -> Vec<String> {
        sqlx::query_scalar("SELECT event_id FROM seen WHERE projection = $1 ORDER BY applied")
            .bind(&self.name)
            .fetch_all(db.pool())
            .await
            .expect("read seen")
    }
}

impl Projection for Seen {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a RecordedEvent) -> Applied<'a> {
        Box::pin(async move {
            // A batch that rolls back leaves a gap in the numbers, never a change of order.
            let applied = self.applied.fetch_add(1, Ordering::SeqCst);
            sqlx::query("INSERT INTO seen (projection, event_id, position, applied) VALUES ($1, $2, $3, $4)")
                .bind(&self.name)
                .bind(&event.envelope.id)
                .bind(event.position)
                .bind(applied)
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }

    fn reset<'a>(&'a self, tx: &'a mut Tx) -> Applied<'a> {
        Box::pin(async move {
            sqlx::query("DELETE FROM seen WHERE projection = $1")
                .bind(&self.name)
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }
}
