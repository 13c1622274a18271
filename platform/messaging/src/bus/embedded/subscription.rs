//! Broadcast subscriptions on the embedded bus: a reader that tails one category's log.

use std::collections::VecDeque;
use std::sync::Arc;

use mercato_storage::StorageError;
use mercato_storage::sqlx;
use tokio::sync::Notify;

use super::{EmbeddedBus, POLL, parse};
use crate::bus::BusError;
use crate::envelope::Envelope;

/// How many log rows a subscription reads at a time.
const SUBSCRIPTION_BATCH: i64 = 256;

impl EmbeddedBus {
    /// Starts tailing the log of `category` at its current end.
    ///
    /// # Errors
    /// [`BusError::Storage`].
    pub async fn subscribe(&self, category: &str) -> Result<EmbeddedSubscription, BusError> {
        let end: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM bus_messages WHERE category = $1")
                .bind(category)
                .fetch_one(self.db.pool())
                .await
                .map_err(StorageError::from)?;
        Ok(EmbeddedSubscription {
            wake: self.wakers.register(category, &[]),
            bus: self.clone(),
            category: category.to_owned(),
            cursor: end,
            ready: VecDeque::new(),
        })
    }
}

/// A reader of one category's log from a position on. The log is written by one writer at a
/// time, so positions become visible in order and a cursor never skips a row.
#[derive(Debug)]
pub struct EmbeddedSubscription {
    bus: EmbeddedBus,
    /// Notified when this process publishes to the category.
    wake: Arc<Notify>,
    category: String,
    cursor: i64,
    ready: VecDeque<Envelope>,
}

impl EmbeddedSubscription {
    /// The next event after the cursor, waiting for one as long as it takes.
    ///
    /// # Errors
    /// [`BusError::Storage`]; the cursor stays where it was, so a later call misses nothing.
    pub async fn next(&mut self) -> Result<Envelope, BusError> {
        loop {
            if let Some(envelope) = self.ready.pop_front() {
                return Ok(envelope);
            }
            let published = self.wake.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT seq, envelope FROM bus_messages WHERE category = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(&self.category)
            .bind(self.cursor)
            .bind(SUBSCRIPTION_BATCH)
            .fetch_all(self.bus.db.pool())
            .await
            .map_err(StorageError::from)?;
            for (seq, body) in rows {
                self.cursor = seq;
                match parse(seq, &body) {
                    Ok(envelope) => self.ready.push_back(envelope),
                    Err(error) => {
                        tracing::error!(%error, seq, "a subscription skips an unreadable bus message")
                    }
                }
            }
            if self.ready.is_empty() {
                let _ = tokio::time::timeout(POLL, published).await;
            }
        }
    }
}
