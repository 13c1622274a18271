//! Bounded disk for the embedded bus: the log keeps a message while any group of its category
//! has not passed it, while a claim or a dead letter names it, and for the replay window after
//! it was published; then it is trimmed.
//!
//! "Passed" is a group's cursor at or beyond the message with no pending row for it, so a
//! message in hand, waiting for a retry or parked is never trimmed, and a group that is away
//! holds back only its own category. A group created later starts at the oldest message kept.

use std::time::Duration;

use mercato_storage::sqlx;
use mercato_storage::{Db, StorageError, now_millis};

use super::EmbeddedBus;
use crate::bus::BusError;
use crate::bus::in_hand::Keeper;

impl EmbeddedBus {
    /// Deletes every message every group of its category has passed, that no claim or dead
    /// letter names, and that was published more than `window` ago. Returns how many went.
    ///
    /// # Errors
    /// [`BusError::Storage`]; what was trimmed before the failure stays trimmed.
    pub async fn trim(&self, window: Duration) -> Result<u64, BusError> {
        trim(&self.db, window).await
    }
}

/// How often an open bus trims the log: often enough that a busy file stays near its window,
/// seldom enough that an idle one costs nothing.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Trims the log every [`TRIM_EVERY`] while the bus is open (every process on the file does;
/// the trims are idempotent).
pub(super) fn keep_trimmed(db: Db, window: Duration) -> Keeper {
    Keeper::spawn(async move {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match trim(&db, window).await {
                Ok(0) => {}
                Ok(trimmed) => tracing::debug!(trimmed, "trimmed the bus log"),
                // The next tick tries again; until then the file only grows.
                Err(error) => tracing::warn!(%error, "cannot trim the bus log"),
            }
        }
    })
}

async fn trim(db: &Db, window: Duration) -> Result<u64, BusError> {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_millis().saturating_sub(window_ms);
    // The newest message old enough, found by the age index, bounds every batch's scan.
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM bus_messages WHERE published_at < $1")
        .bind(cutoff)
        .fetch_one(db.pool())
        .await
        .map_err(StorageError::from)?;
    let Some(newest) = newest else {
        return Ok(0);
    };
    // A message is passed by every group of its category, named by no claim and no dead letter.
    let trimmed = crate::retention::delete_in_batches(
        db,
        "DELETE FROM bus_messages WHERE seq IN (
           SELECT m.seq FROM bus_messages m
           WHERE m.seq <= $1
             AND NOT EXISTS (SELECT 1 FROM bus_groups g WHERE g.category = m.category AND g.cursor < m.seq)
             AND NOT EXISTS (SELECT 1 FROM bus_pending p WHERE p.seq = m.seq)
             AND NOT EXISTS (SELECT 1 FROM bus_dead_letters d WHERE d.seq = m.seq)
           ORDER BY m.seq LIMIT $2)",
        &[],
        newest,
    )
    .await?;
    Ok(trimmed)
}
