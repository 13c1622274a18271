//! What a service wrote to its outbox, read back for assertions.

use mercato_messaging::Envelope;
use mercato_storage::Db;
use sqlx::Row as _;

/// The types of the events written to `db`'s outbox for `stream`, in the stream's order. Exact
/// the moment the writing transaction commits, with no relay or bus in between.
///
/// # Panics
/// When the outbox cannot be read or holds something other than an envelope.
pub async fn event_types(db: &Db, stream: &str) -> Vec<String> {
    let rows = sqlx::query("SELECT envelope FROM outbox WHERE stream_id = $1 ORDER BY stream_seq")
        .bind(stream)
        .fetch_all(db.pool())
        .await
        .expect("read the outbox");
    rows.iter()
        .map(|row| {
            let envelope: Envelope =
                serde_json::from_str(&row.get::<String, _>("envelope")).expect("an outbox envelope");
            envelope.event_type
        })
        .collect()
}
