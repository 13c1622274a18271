//! Bounded disk: what the bus log, the inbox and the outbox keep only for a window is deleted
//! in batches, each its own short transaction, so a large backlog of old rows never holds a
//! database's writer (SQLite has one) for long.

use mercato_storage::{Db, StorageError, sqlx};

/// Rows deleted per transaction.
pub(crate) const BATCH: i64 = 2_000;

/// Runs `delete` (a `DELETE` whose `$1`..`$n` are `texts`, then `bound`, then the batch size as
/// its `LIMIT`) until a batch deletes fewer than [`BATCH`] rows. Returns how many went.
///
/// # Errors
/// The database failed; what earlier batches deleted stays deleted.
pub(crate) async fn delete_in_batches(
    db: &Db,
    delete: &str,
    texts: &[&str],
    bound: i64,
) -> Result<u64, StorageError> {
    let mut deleted = 0;
    loop {
        let mut query = sqlx::query(delete);
        for text in texts {
            query = query.bind(*text);
        }
        let mut tx = db.begin().await?;
        let batch = query
            .bind(bound)
            .bind(BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        deleted += batch;
        if batch < BATCH.unsigned_abs() {
            return Ok(deleted);
        }
    }
}
