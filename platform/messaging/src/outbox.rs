//! The transactional outbox: events are written in the same transaction as the state change that
//! caused them, then published by the [`crate::relay`]. A crash between the two loses nothing:
//! the row is still unpublished and goes out (again) on the next pass.

use std::sync::Arc;

use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Backend, Migration, StorageError, Tx, now_millis};
use tokio::sync::Notify;

use crate::envelope::Envelope;

/// The outbox tables; a service lists this among its migrations.
pub const MIGRATION: Migration = Migration::new(1001, "outbox", include_str!("../migrations/outbox.sql"))
    .with_postgres(include_str!("../migrations/outbox.postgres.sql"));

/// Wakes the relay when a transaction with outbox rows has committed, so publishing does not wait
/// for the next poll.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after committing a transaction that appended events.
    pub fn committed(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// Appends `envelope` in `tx`, giving it the next position of its stream.
///
/// # Errors
/// The database failed (a concurrent writer of the same stream on PostgreSQL waits on the
/// stream's row; it does not fail).
pub async fn append(tx: &mut Tx, envelope: &mut Envelope) -> Result<(), StorageError> {
    match Backend::of_connection(tx) {
        Backend::Postgres => append_numbered(tx, envelope).await,
        // SQLite has no `INSERT` inside `WITH`: the position first, then the row.
        Backend::Sqlite => {
            let row = sqlx::query(NEXT_POSITION)
                .bind(&envelope.stream_id)
                .fetch_one(&mut **tx)
                .await?;
            envelope.stream_seq = row.get::<i64, _>("last_seq");
            append_positioned(tx, envelope).await
        }
    }
}

/// Takes the next position of stream `$1`.
const NEXT_POSITION: &str = "INSERT INTO outbox_streams (stream_id, last_seq) VALUES ($1, 1)
     ON CONFLICT (stream_id) DO UPDATE SET last_seq = outbox_streams.last_seq + 1
     RETURNING last_seq";

/// [`append`] on PostgreSQL in one round trip: the statement takes the stream's next position
/// and writes the row with it, splicing the position into the envelope's JSON.
async fn append_numbered(tx: &mut Tx, envelope: &mut Envelope) -> Result<(), StorageError> {
    envelope.stream_seq = 0;
    let body = serde_json::to_string(envelope).map_err(|e| StorageError::Config(e.to_string()))?;
    let (before, after) = around_stream_seq(&body).ok_or_else(|| {
        StorageError::Config(format!("event {}: no stream position in its JSON", envelope.id))
    })?;
    let row = sqlx::query(&format!(
        "WITH numbered AS ({NEXT_POSITION})
         INSERT INTO outbox (event_id, category, stream_id, stream_seq, envelope, created_at)
         SELECT $2, $3, $1, last_seq, $4 || last_seq::text || $5, $6 FROM numbered
         RETURNING stream_seq"
    ))
    .bind(&envelope.stream_id)
    .bind(&envelope.id)
    .bind(envelope.category())
    .bind(before)
    .bind(after)
    .bind(now_millis())
    .fetch_one(&mut **tx)
    .await?;
    envelope.stream_seq = row.get::<i64, _>("stream_seq");
    Ok(())
}

/// An envelope's JSON (its stream position written as 0) before and after that 0. The first
/// `"stream_seq":` is the envelope's own key: only its id, type, schema version, source and
/// stream id come before it, and a quote inside a JSON string is escaped.
fn around_stream_seq(body: &str) -> Option<(&str, &str)> {
    const KEY: &str = "\"stream_seq\":0";
    let zero = body.find(KEY)? + KEY.len() - 1;
    Some((&body[..zero], &body[zero + 1..]))
}

/// Appends `envelope` in `tx` with the stream position it already has (the event store's version).
///
/// # Errors
/// The database failed; [`StorageError::Conflict`] if this event id is already in the outbox.
pub async fn append_positioned(tx: &mut Tx, envelope: &Envelope) -> Result<(), StorageError> {
    let body = serde_json::to_string(envelope).map_err(|e| StorageError::Config(e.to_string()))?;
    append_serialized(tx, &[(envelope, body.as_str())]).await
}

/// Rows per multi-row insert: 6 values each stays far below either backend's bound on parameters.
const ROWS_PER_STATEMENT: usize = 100;

/// Appends `envelopes`, each with the stream position it already has and its JSON as the caller
/// serialized it (the event store has it already), in one statement per hundred, in order.
///
/// # Errors
/// The database failed; [`StorageError::Conflict`] if an event id is already in the outbox.
pub async fn append_serialized(tx: &mut Tx, envelopes: &[(&Envelope, &str)]) -> Result<(), StorageError> {
    let now = now_millis();
    for chunk in envelopes.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let n = 6 * i;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO outbox (event_id, category, stream_id, stream_seq, envelope, created_at) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for &(envelope, body) in chunk {
            query = query
                .bind(&envelope.id)
                .bind(envelope.category())
                .bind(&envelope.stream_id)
                .bind(envelope.stream_seq)
                .bind(body)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_goes_where_the_envelope_keeps_it_whatever_its_strings_and_payload_hold() {
        let tricky = "\"stream_seq\":0,";
        let mut envelope = crate::bus::tests::envelope(serde_json::json!({
            "note": tricky,
            "stream_seq": 0,
            "nested": {"stream_seq": 0},
        }));
        envelope.stream_id = tricky.into();
        envelope.source = tricky.into();
        envelope.stream_seq = 0;
        let body = serde_json::to_string(&envelope).unwrap();
        let (before, after) = around_stream_seq(&body).expect("the key is there");
        let spliced: Envelope = serde_json::from_str(&format!("{before}42{after}")).unwrap();
        assert_eq!(spliced.stream_seq, 42);
        envelope.stream_seq = 42;
        assert_eq!(spliced, envelope, "nothing else moved");
    }
}
