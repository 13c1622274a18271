//! An event store on a service's own database, the same on SQLite and PostgreSQL.
//!
//! A service that keeps an aggregate as events appends them here, with the version it expects
//! the stream to be at, inside its own write transaction. The append puts every event in the
//! outbox in that same transaction, so an event is stored and published, or neither: no dual
//! write. Projections read the global log in position order and keep a checkpoint that commits
//! with their effects.
//!
//! - [`store`]: [`append`] with an [`ExpectedVersion`], and the reads ([`read_stream`],
//!   [`read_all`], [`stream_version`]).
//! - [`projection`]: the [`Projection`] trait, [`catch_up`], [`run`], [`rebuild`] and
//!   [`checkpoint`].
//! - [`error`]: [`EventStoreError`]; version conflicts are typed, never overwrites.
//! - `horizon`: how far the global log can be read without missing a late commit.
//!
//! Guarantees:
//! - a stream's versions are 1, 2, 3, … with no gaps and no duplicates; two writers that expect
//!   the same version get one success and one [`EventStoreError::Conflict`];
//! - the global log is read in commit order and only as far as no transaction still running
//!   can add to it (on PostgreSQL each event carries its transaction's id, and reads stop below
//!   the oldest one still running in the database; SQLite has one writer), so a reader that
//!   continues from the last event it saw never misses one that commits later, and appends never
//!   wait for each other;
//! - a projection applies each event exactly once, in position order, even with several runners.
//!
//! A service lists [`mercato_messaging::outbox::MIGRATION`], [`MIGRATION`], [`COMMIT_ORDER`]
//! and [`BY_TIME`] among its migrations; [`with_platform`] adds them, with the relay's and the inbox's, to a
//! service's one migration of its own.
//!
//! ```no_run
//! # async fn example(db: mercato_storage::Db, events: Vec<mercato_messaging::Envelope>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use mercato_eventstore::{ExpectedVersion, append, read_stream};
//!
//! let history = read_stream(db.pool(), "order-42").await?;
//! let expected = ExpectedVersion::Exact(history.last().map_or(0, |e| e.version));
//! let mut tx = db.begin().await?;
//! append(&mut tx, "order-42", expected, events).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod error;
mod horizon;
pub mod projection;
pub mod store;

use mercato_storage::Migration;

pub use error::EventStoreError;
pub use projection::{
    Applied, AppliedAll, BoxFuture, CatchUpError, Projection, ProjectionError, catch_up, checkpoint, rebuild,
    run,
};
pub use store::{
    AppendResult, ExpectedVersion, RecordedEvent, append, read_all, read_stream, stream_version,
};

/// The `events` and `checkpoints` tables; list it after the outbox's migration.
pub const MIGRATION: Migration =
    Migration::new(1101, "event_store", include_str!("../migrations/event_store.sql"))
        .with_postgres(include_str!("../migrations/event_store.postgres.sql"));

/// Orders the global log by commit: each event's transaction id on PostgreSQL, and the views the
/// reads go through; list it after [`MIGRATION`].
pub const COMMIT_ORDER: Migration = Migration::new(
    1102,
    "event_store_commit_order",
    include_str!("../migrations/commit_order.sql"),
)
.with_postgres(include_str!("../migrations/commit_order.postgres.sql"));

/// An index on when each event was recorded, for reads of a recent window of the log (orders'
/// checkout funnel) that would otherwise scan every event ever recorded.
pub const BY_TIME: Migration = Migration::new(
    1103,
    "event_store_recorded_at",
    include_str!("../migrations/recorded_at.sql"),
);

/// A service's schema: its own `migration`, then what an event-sourced service needs of the
/// platform (the outbox and its relay, the inbox, the event store, its commit order and its
/// index by time).
#[must_use]
pub const fn with_platform(migration: Migration) -> [Migration; 9] {
    [
        migration,
        mercato_messaging::outbox::MIGRATION,
        mercato_messaging::relay::MIGRATION,
        mercato_messaging::relay::RETENTION_MIGRATION,
        mercato_messaging::inbox::MIGRATION,
        mercato_messaging::inbox::RETENTION_MIGRATION,
        MIGRATION,
        COMMIT_ORDER,
        BY_TIME,
    ]
}

/// [`with_platform`], then `after`: a migration of the service's own that reads the platform's
/// tables (the event store's, to fill a new column from the events).
#[must_use]
pub const fn with_platform_then(migration: Migration, after: Migration) -> [Migration; 10] {
    let platform = with_platform(migration);
    let mut all = [after; 10];
    let mut i = 0;
    while i < platform.len() {
        all[i] = platform[i];
        i += 1;
    }
    all
}
