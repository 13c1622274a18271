//! Batches on the embedded bus: a publish of many envelopes in one transaction, an
//! acknowledgement of many deliveries in one statement. Every statement on the bus file is a
//! commit and SQLite has one writer, so fewer statements is what lets a busy file keep up.

use mercato_storage::sqlx;
use mercato_storage::{StorageError, now_millis};

use super::{EmbeddedBus, EmbeddedConsumer};
use crate::bus::{BusError, Delivery, DeliveryHandle, PartialPublish, ack_each, check_envelope_category};
use crate::envelope::Envelope;

/// Rows per multi-row statement: 5 values each stays far below SQLite's bound on parameters.
const ROWS_PER_STATEMENT: usize = 100;

impl EmbeddedBus {
    /// Appends the envelopes to the log in one transaction, skipping ids already there. An
    /// envelope no backend accepts stops the batch before it; those before it are stored.
    ///
    /// # Errors
    /// [`PartialPublish`]: the first unacceptable envelope, or the file failed (then none is
    /// stored).
    pub async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), PartialPublish> {
        let mut rows = Vec::with_capacity(envelopes.len());
        let mut refused = None;
        for envelope in envelopes {
            match row(envelope) {
                Ok(row) => rows.push(row),
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        if let Err(error) = self.insert(&rows).await {
            return Err(PartialPublish {
                acknowledged: 0,
                error,
            });
        }
        if !rows.is_empty() {
            self.wakers.published(rows.iter().map(|(envelope, _)| *envelope));
        }
        match refused {
            Some(error) => Err(PartialPublish {
                acknowledged: rows.len(),
                error,
            }),
            None => Ok(()),
        }
    }

    async fn insert(&self, rows: &[(&Envelope, String)]) -> Result<(), BusError> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        let mut tx = self.db.begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = 5 * i;
                    format!("(${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5)
                })
                .collect();
            let sql = format!(
                "INSERT INTO bus_messages (event_id, category, event_type, envelope, published_at) VALUES {}
                 ON CONFLICT (event_id) DO NOTHING",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (envelope, body) in chunk {
                query = query
                    .bind(&envelope.id)
                    .bind(envelope.category())
                    .bind(&envelope.event_type)
                    .bind(body.as_str())
                    .bind(now);
            }
            query.execute(&mut *tx).await.map_err(StorageError::from)?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// An envelope with the JSON the log stores.
fn row(envelope: &Envelope) -> Result<(&Envelope, String), BusError> {
    check_envelope_category(envelope)?;
    let body = serde_json::to_string(envelope).map_err(|e| BusError::Malformed {
        id: envelope.id.clone(),
        reason: e.to_string(),
    })?;
    Ok((envelope, body))
}

impl EmbeddedConsumer {
    /// Releases the claims of `deliveries` in one statement, each fenced by the attempt it was
    /// claimed with as [`super::EmbeddedHandle::ack`] is.
    ///
    /// # Errors
    /// [`BusError::Storage`]; the messages come again after the ack wait.
    pub async fn ack_all(&self, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        let mut claims = Vec::with_capacity(deliveries.len());
        let mut foreign = Vec::new();
        for delivery in deliveries {
            match delivery.handle {
                DeliveryHandle::Embedded(h)
                    if h.claim.group == self.group && h.claim.category == self.category =>
                {
                    // No longer held: the keeper stops renewing it before it is released.
                    drop(h.held);
                    claims.push((h.claim.seq, h.claim.attempts));
                }
                handle => foreign.push(Delivery { handle, ..delivery }),
            }
        }
        if claims.is_empty() {
            return ack_each(foreign).await;
        }
        // In a write transaction, not as statements of their own: it joins the writes queued on
        // the file and shares their commit, where a statement alone would be a commit (an `fsync`)
        // of its own and wait for the file's lock outside the process's queue.
        let mut tx = self.bus.db.begin().await?;
        for chunk in claims.chunks(ROWS_PER_STATEMENT) {
            let fences: Vec<String> = (0..chunk.len())
                .map(|i| format!("(seq = ${} AND attempts = ${})", 2 * i + 3, 2 * i + 4))
                .collect();
            let sql = format!(
                "DELETE FROM bus_pending WHERE group_name = $1 AND category = $2 AND ({})",
                fences.join(" OR ")
            );
            let mut query = sqlx::query(&sql).bind(&self.group).bind(&self.category);
            for (seq, attempts) in chunk {
                query = query.bind(*seq).bind(*attempts);
            }
            query.execute(&mut *tx).await.map_err(StorageError::from)?;
        }
        tx.commit().await?;
        ack_each(foreign).await
    }
}
