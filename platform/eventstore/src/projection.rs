//! Projections: read models kept up to date from the global log, each with a checkpoint that
//! commits in the same transaction as its effects, so every event takes effect exactly once.
//! The checkpoint names the last event applied; the next batch reads what comes after it in
//! commit order (see [`crate::horizon`]).
//!
//! Runners of the same projection (replicas of a service) take turns on the projection's
//! checkpoint row: a batch read after the checkpoint moves it first thing in its transaction,
//! only if it is still where the batch was read from; PostgreSQL locks the row until commit and
//! SQLite serialises writers anyway, so two runners never apply the same event.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mercato_messaging::EnvelopeError;
use mercato_storage::sqlx::{self, Any, Executor};
use mercato_storage::{Db, StorageError, Tx, now_millis};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::EventStoreError;
use crate::horizon;
use crate::store::{RecordedEvent, decode_row, read_all_rows};

/// The events one catch-up transaction applies when [`run`] or [`rebuild`] choose the size.
const RUN_BATCH: usize = 200;
const REBUILD_BATCH: usize = 500;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A boxed, sendable future, so [`Projection`] can be used as `Arc<dyn Projection>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What applying an event or resetting a projection returns.
pub type Applied<'a> = BoxFuture<'a, Result<(), ProjectionError>>;

/// What applying a batch returns: on failure, the failing event's place in the batch with its
/// error.
pub type AppliedAll<'a> = BoxFuture<'a, Result<(), (usize, ProjectionError)>>;

/// A read model built from the global log.
///
/// Implementations write only through the given transaction: that is what makes an event's
/// effects and the checkpoint after it commit together; an apply whose transaction rolled back
/// (its batch failed later on) is simply called again, so nothing outside the transaction may
/// depend on how often it runs. Methods return boxed futures
/// (`Box::pin(async move { … })`) so projections can be held as `Arc<dyn Projection>`.
pub trait Projection: Send + Sync {
    /// Unique within the database: it names the projection's checkpoint.
    fn name(&self) -> &str;

    /// Applies one event; events arrive in position order and each takes effect once. Ignore types
    /// you do not use.
    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a RecordedEvent) -> Applied<'a>;

    /// Applies a batch of events, in order, in one transaction: [`Projection::apply`] on each
    /// unless the projection has a cheaper way (one read for the whole batch, say). A failure
    /// names the event that failed; the runner then rolls the batch back and commits the events
    /// before it on their own.
    fn apply_all<'a>(&'a self, tx: &'a mut Tx, events: &'a [RecordedEvent]) -> AppliedAll<'a> {
        Box::pin(async move {
            for (index, event) in events.iter().enumerate() {
                self.apply(tx, event).await.map_err(|error| (index, error))?;
            }
            Ok(())
        })
    }

    /// Empties the projection's read tables, ahead of a [`rebuild`].
    fn reset<'a>(&'a self, tx: &'a mut Tx) -> Applied<'a>;

    /// Called after a batch of applied events committed, so readers can be told of the change
    /// only once it is visible.
    fn committed(&self) {}
}

impl<P: Projection + ?Sized> Projection for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a RecordedEvent) -> Applied<'a> {
        (**self).apply(tx, event)
    }

    fn apply_all<'a>(&'a self, tx: &'a mut Tx, events: &'a [RecordedEvent]) -> AppliedAll<'a> {
        (**self).apply_all(tx, events)
    }

    fn reset<'a>(&'a self, tx: &'a mut Tx) -> Applied<'a> {
        (**self).reset(tx)
    }

    fn committed(&self) {
        (**self).committed();
    }
}

/// Why a projection could not apply an event or reset.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot decode the event: {0}")]
    Decode(#[from] EnvelopeError),
    /// The projection's own reason, such as an event its rules do not allow.
    #[error("{0}")]
    Failed(String),
}

impl ProjectionError {
    /// True when retrying may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Storage(e) if e.is_transient())
    }
}

impl From<sqlx::Error> for ProjectionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Storage(error.into())
    }
}

/// Why catching up or rebuilding stopped.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// The events before this one were applied and checkpointed; this one was not.
    #[error("projection {projection:?} failed on the event at position {position}")]
    Apply {
        projection: String,
        position: i64,
        #[source]
        source: ProjectionError,
    },
    #[error("projection {projection:?} could not be reset")]
    Reset {
        projection: String,
        #[source]
        source: ProjectionError,
    },
    /// Reading events or writing the checkpoint failed, or a stored event is malformed.
    #[error(transparent)]
    Store(#[from] EventStoreError),
}

impl CatchUpError {
    /// True when retrying may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Apply { source, .. } | Self::Reset { source, .. } => source.is_transient(),
            Self::Store(e) => e.is_transient(),
        }
    }
}

impl From<StorageError> for CatchUpError {
    fn from(error: StorageError) -> Self {
        Self::Store(error.into())
    }
}

impl From<sqlx::Error> for CatchUpError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

/// The position of the last event `name` has applied; 0 before its first event.
///
/// # Errors
/// The database failed.
pub async fn checkpoint<'e, E>(executor: E, name: &str) -> Result<i64, EventStoreError>
where
    E: Executor<'e, Database = Any>,
{
    let position: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
        .bind(name)
        .fetch_optional(executor)
        .await?;
    Ok(position.unwrap_or(0))
}

/// Applies every event after the projection's checkpoint, `batch` events per transaction, each
/// transaction moving the checkpoint with the effects; returns how many it applied.
///
/// Every event committed before the call is applied: on PostgreSQL it first waits for the
/// transactions still running, as [`crate::read_all`] does. So a writer that catches up after
/// committing reads its own write.
///
/// # Errors
/// [`CatchUpError::Apply`] when the projection fails on an event: the events before it
/// are applied and checkpointed, it and those after it are not, and the next call starts from it.
/// [`CatchUpError::Store`] when the database fails or a stored event is malformed (the
/// events before it are applied).
pub async fn catch_up<P: Projection + ?Sized>(
    db: &Db,
    projection: &P,
    batch: usize,
) -> Result<u64, CatchUpError> {
    let name = projection.name();
    let horizon = horizon::settle(db.pool()).await?;
    let limit = batch.max(1);
    let mut applied = 0;
    let mut from = checkpoint(db.pool(), name).await?;
    loop {
        // Events never change once committed, so they are read before the transaction: an idle
        // poll stays read-only (it never queues for SQLite's one writer), and the transaction
        // holds its locks only while the projection applies.
        let rows = read_all_rows(db.pool(), from, limit, horizon).await?;
        if rows.is_empty() {
            return Ok(applied);
        }
        let full = rows.len() == limit;
        // The events up to the first that does not decode; that one fails the batch after them.
        let mut events = Vec::with_capacity(rows.len());
        let mut malformed = None;
        for row in &rows {
            match decode_row(row) {
                Ok(event) => events.push(event),
                Err(error) => {
                    malformed = Some(CatchUpError::Store(error));
                    break;
                }
            }
        }
        let failure = match apply_batch(db, projection, from, &events).await? {
            Batch::Committed => None,
            Batch::Moved => {
                // Another runner applied these: go on from where it left the checkpoint.
                from = checkpoint(db.pool(), name).await?;
                continue;
            }
            Batch::Failed { index, error } => {
                // The batch was rolled back whole; commit the events before the failure again,
                // on their own, so the checkpoint ends just before the event that failed.
                events.truncate(index);
                match apply_batch(db, projection, from, &events).await? {
                    Batch::Committed => Some(error),
                    Batch::Moved => {
                        from = checkpoint(db.pool(), name).await?;
                        continue;
                    }
                    Batch::Failed { .. } => return Err(error),
                }
            }
        };
        applied += events.len() as u64;
        if let Some(last) = events.last() {
            from = last.position;
        }
        if let Some(error) = failure.or(malformed) {
            return Err(error);
        }
        if !full {
            return Ok(applied);
        }
    }
}

/// Empties the projection and its checkpoint in one transaction, then applies every event from
/// the start; returns how many it applied.
///
/// Readers see the read model fill up again while the rebuild catches up.
///
/// # Errors
/// [`CatchUpError::Reset`] when the projection cannot reset (nothing changed), otherwise as
/// [`catch_up`].
pub async fn rebuild<P: Projection + ?Sized>(db: &Db, projection: &P) -> Result<u64, CatchUpError> {
    let name = projection.name();
    let mut tx = db.begin().await?;
    restart(&mut tx, name).await?;
    projection
        .reset(&mut tx)
        .await
        .map_err(|source| CatchUpError::Reset {
            projection: name.to_owned(),
            source,
        })?;
    tx.commit().await?;
    tracing::info!(projection = name, "projection reset; rebuilding from the start");
    catch_up(db, projection, REBUILD_BATCH).await
}

/// Keeps `projection` caught up until `shutdown`: after each catch-up it waits for `wake` or
/// `poll_interval`, whichever comes first.
///
/// `wake` is signalled with [`Notify::notify_one`] after committing an append; the permit is
/// kept if the runner is busy, so no wake is lost. Give each runner its own `Notify` (one
/// `notify_one` wakes one runner); the poll interval bounds the delay anyway.
///
/// A failure is logged and retried with exponential backoff (from 100 ms to 30 s), from the
/// event that failed: an event is never skipped. Shutdown interrupts a catch-up safely: its
/// transaction rolls back and the next start resumes from the checkpoint.
pub async fn run<P: Projection>(
    db: Db,
    projection: P,
    wake: Arc<Notify>,
    poll_interval: Duration,
    shutdown: CancellationToken,
) {
    let name = projection.name().to_owned();
    let mut failures = 0_u32;
    loop {
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            outcome = catch_up(&db, &projection, RUN_BATCH) => outcome,
        };
        let pause = match outcome {
            Ok(applied) => {
                failures = 0;
                if applied > 0 {
                    tracing::debug!(projection = %name, applied, "projection caught up");
                }
                None
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures);
                tracing::error!(
                    projection = %name,
                    error.cause_chain = %cause_chain(&error),
                    transient = error.is_transient(),
                    attempt = failures,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "projection failed; retrying from the event that failed"
                );
                Some(delay)
            }
        };
        let stop = match pause {
            None => tokio::select! {
                biased;
                () = shutdown.cancelled() => true,
                () = wake.notified() => false,
                () = tokio::time::sleep(poll_interval) => false,
            },
            Some(delay) => tokio::select! {
                biased;
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(delay) => false,
            },
        };
        if stop {
            break;
        }
    }
    tracing::debug!(projection = %name, "projection runner stopped");
}

/// The pause before retry `attempt` (1-based): doubling from [`BACKOFF_START`] up to [`BACKOFF_MAX`].
fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    BACKOFF_START.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// The error and its sources as one line; a source already quoted by its parent is left out.
fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

enum Batch {
    Committed,
    /// Another runner moved the checkpoint first; nothing was applied.
    Moved,
    /// The transaction was rolled back; `index` is the failing event's place in the batch.
    Failed {
        index: usize,
        error: CatchUpError,
    },
}

/// Applies `events`, read after the checkpoint at `from`, in one transaction that moves the
/// checkpoint past them. An empty batch commits nothing.
async fn apply_batch<P: Projection + ?Sized>(
    db: &Db,
    projection: &P,
    from: i64,
    events: &[RecordedEvent],
) -> Result<Batch, CatchUpError> {
    let Some(last) = events.last() else {
        return Ok(Batch::Committed);
    };
    let name = projection.name();
    let mut tx = db.begin().await?;
    // The checkpoint first, as `rebuild` takes it: a runner and a rebuild lock the checkpoint
    // row before any read-model row, so neither waits on the other while holding what it needs.
    if !advance(&mut tx, name, from, last.position).await? {
        return Ok(Batch::Moved);
    }
    if let Err((index, source)) = projection.apply_all(&mut tx, events).await {
        if let Err(e) = tx.rollback().await {
            tracing::warn!(projection = name, error = %e, "rolling back a failed batch failed");
        }
        let error = CatchUpError::Apply {
            projection: name.to_owned(),
            position: events.get(index).map_or(0, |e| e.position),
            source,
        };
        return Ok(Batch::Failed { index, error });
    }
    tx.commit().await?;
    projection.committed();
    Ok(Batch::Committed)
}

/// Moves the checkpoint from `from` to `to`, holding its row until the transaction ends; false,
/// with nothing written, when it is no longer at `from` (another runner of the projection
/// applied those events: PostgreSQL's row lock makes it wait for that runner's commit, SQLite's
/// single writer serialises anyway).
async fn advance(tx: &mut Tx, name: &str, from: i64, to: i64) -> Result<bool, EventStoreError> {
    let moved: Option<i64> = sqlx::query_scalar(
        "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $3, $4)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
         WHERE checkpoints.position = $2
         RETURNING position",
    )
    .bind(name)
    .bind(from)
    .bind(to)
    .bind(now_millis())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(moved.is_some())
}

/// Sets the checkpoint back to the start, holding its row until the transaction ends: a runner
/// of the same projection waits for the reset instead of applying into emptied tables, and its
/// batch then finds the checkpoint moved.
async fn restart(tx: &mut Tx, name: &str) -> Result<(), EventStoreError> {
    sqlx::query(
        "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, 0, $2)
         ON CONFLICT (name) DO UPDATE SET position = 0, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(now_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_tenth_of_a_second_and_stops_at_thirty_seconds() {
        let delays: Vec<u128> = (1..=10).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        assert_eq!(backoff(0), BACKOFF_START);
    }

    #[test]
    fn the_cause_chain_names_each_cause_once() {
        let error = CatchUpError::Apply {
            projection: "order_summaries".into(),
            position: 7,
            source: ProjectionError::Failed("no such order".into()),
        };
        assert_eq!(
            cause_chain(&error),
            "projection \"order_summaries\" failed on the event at position 7: no such order"
        );
    }

    #[test]
    fn transience_comes_from_the_underlying_error() {
        let busy = || StorageError::Transient(sqlx::Error::PoolTimedOut);
        let apply = |source| CatchUpError::Apply {
            projection: "p".into(),
            position: 1,
            source,
        };
        assert!(apply(ProjectionError::Storage(busy())).is_transient());
        assert!(!apply(ProjectionError::Failed("rule".into())).is_transient());
        assert!(CatchUpError::from(busy()).is_transient());
    }
}
