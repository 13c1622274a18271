//! Dead letters on the embedded bus: `bus_dead_letters`, parking a delivery there, listing and
//! replaying what it holds.

use mercato_storage::sqlx;
use mercato_storage::{StorageError, now_millis};

use super::{EmbeddedBus, EmbeddedHandle, parse};
use crate::bus::{BusError, DeadLetter, parked_error};
use crate::envelope::Envelope;

impl EmbeddedBus {
    /// The oldest dead letters first, at most `limit`.
    ///
    /// # Errors
    /// [`BusError::Storage`]; [`BusError::Malformed`] if a stored envelope no longer parses.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let rows: Vec<(i64, String, String, i64, i64, String)> = sqlx::query_as(
            "SELECT d.id, d.group_name, d.error, d.attempts, d.parked_at, m.envelope
             FROM bus_dead_letters d JOIN bus_messages m ON m.seq = d.seq
             ORDER BY d.id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await
        .map_err(StorageError::from)?;
        rows.into_iter()
            .map(|(id, group, error, attempts, parked_at, body)| {
                Ok(DeadLetter {
                    id: id.to_string(),
                    group,
                    envelope: parse(id, &body)?,
                    error,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    parked_at,
                })
            })
            .collect()
    }

    /// Makes the parked message pending again for its group, visible now, and drops the dead
    /// letter, in one transaction.
    ///
    /// # Errors
    /// [`BusError::Storage`].
    pub async fn replay_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let mut tx = self.db.begin().await?;
        let found: Option<(String, String, i64)> =
            sqlx::query_as("SELECT group_name, category, seq FROM bus_dead_letters WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StorageError::from)?;
        let Some((group, category, seq)) = found else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO bus_pending (group_name, category, seq, attempts, visible_at) VALUES ($1, $2, $3, 0, $4)
             ON CONFLICT (group_name, category, seq) DO UPDATE SET attempts = 0, visible_at = excluded.visible_at",
        )
        .bind(&group)
        .bind(&category)
        .bind(seq)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(StorageError::from)?;
        sqlx::query("DELETE FROM bus_dead_letters WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::from)?;
        tx.commit().await?;
        self.wakers.all();
        Ok(true)
    }
}

impl EmbeddedHandle {
    /// Releases the claim and records the dead letter in one transaction; the envelope stays in
    /// the log, so only its position is stored.
    ///
    /// # Errors
    /// [`BusError::Storage`]; the message comes again after the ack wait.
    pub async fn park(self, _envelope: &Envelope, attempts: u32, error: &str) -> Result<(), BusError> {
        let Self { db, claim, held } = self;
        drop(held);
        let mut tx = db.begin().await?;
        let released = sqlx::query(
            "DELETE FROM bus_pending WHERE group_name = $1 AND category = $2 AND seq = $3 AND attempts = $4",
        )
        .bind(&claim.group)
        .bind(&claim.category)
        .bind(claim.seq)
        .bind(claim.attempts)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::from)?
        .rows_affected();
        if released == 1 {
            sqlx::query(
                "INSERT INTO bus_dead_letters (group_name, category, seq, error, attempts, parked_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&claim.group)
            .bind(&claim.category)
            .bind(claim.seq)
            .bind(parked_error(error))
            .bind(i64::from(attempts))
            .bind(now_millis())
            .execute(&mut *tx)
            .await
            .map_err(StorageError::from)?;
        }
        tx.commit().await?;
        Ok(())
    }
}
