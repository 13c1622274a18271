//! The horizon of the global log: how far it can be read without missing a late commit.
//!
//! Positions are taken when an append inserts, but transactions commit in any order. So the log
//! is read in commit order, `(commit_order, position)`, and only below the horizon, the lowest
//! transaction that may still add events: nothing can appear below it any more. On PostgreSQL
//! `commit_order` is the appending transaction's id and the horizon is the oldest transaction
//! still running in the service's database (transactions of other databases never hold it
//! back); on SQLite, whose one writer commits in position order, it is the position and every
//! committed event is below the horizon. The views `events_in_commit_order` and `event_horizon`
//! ([`crate::COMMIT_ORDER`]) hold the PostgreSQL-only SQL, so the reads here are written once.
//!
//! The horizon is read in a statement of its own before the events are: a transaction that
//! ended before it is then in the later read's snapshot.

use std::time::Duration;

use mercato_storage::sqlx::{self, Any, Executor};
use tokio::time::Instant;

use crate::error::EventStoreError;

/// How long a read waits for transactions that were running when it began. Transactions are
/// short (no call leaves the process inside one); one held open longer only delays the read,
/// and what it hides stays hidden, so nothing is skipped.
const PATIENCE: Duration = Duration::from_secs(5);
const PAUSE_MAX: Duration = Duration::from_millis(16);

/// The horizon now: events whose `commit_order` is below it are final.
pub(crate) async fn now<'e, E>(executor: E) -> Result<i64, EventStoreError>
where
    E: Executor<'e, Database = Any>,
{
    Ok(sqlx::query_scalar("SELECT horizon FROM event_horizon")
        .fetch_one(executor)
        .await?)
}

/// Waits until every transaction running when it was called has ended, so every event committed
/// before the call is below the horizon it returns; on SQLite it returns at once. Gives up after
/// [`PATIENCE`] with a warning: the read then sees less, never out of order.
///
/// Call it outside a write transaction: one's own transaction would hold the horizon back.
pub(crate) async fn settle<'e, E>(executor: E) -> Result<i64, EventStoreError>
where
    E: Executor<'e, Database = Any> + Copy,
{
    let (horizon, next_to_start): (i64, i64) =
        sqlx::query_as("SELECT horizon, next_to_start FROM event_horizon")
            .fetch_one(executor)
            .await?;
    if horizon >= next_to_start {
        return Ok(horizon);
    }
    let deadline = Instant::now() + PATIENCE;
    let mut pause = Duration::ZERO;
    loop {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let horizon = now(executor).await?;
        if horizon >= next_to_start {
            return Ok(horizon);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                horizon,
                waiting_for = next_to_start,
                "a long transaction holds the event log's horizon back; reading what is below it"
            );
            return Ok(horizon);
        }
        pause = (pause * 2).clamp(Duration::from_millis(1), PAUSE_MAX);
    }
}
