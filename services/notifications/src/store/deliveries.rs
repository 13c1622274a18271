//! What happened to a customer's notifications: every one on every channel, and each email's
//! logged attempts; for operators and tests.

use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Db, StorageError};

/// One notification's delivery record, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub kind: String,
    pub channel: String,
    pub recipient: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str =
    "id, event_id, kind, channel, recipient, state, attempts, last_error, created_at, sent_at";

/// Every notification for a customer on every channel, oldest first.
///
/// # Errors
/// The database failed.
pub async fn deliveries(db: &Db, customer_id: &str) -> Result<Vec<Delivery>, StorageError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM notifications WHERE customer_id = $1 ORDER BY created_at, id"
    );
    let rows = sqlx::query(&sql).bind(customer_id).fetch_all(db.pool()).await?;
    rows.iter().map(delivery_of).collect()
}

/// Every notification made for one of `event_ids`, on every channel, oldest first.
///
/// # Errors
/// The database failed.
pub async fn deliveries_for_events(db: &Db, event_ids: &[String]) -> Result<Vec<Delivery>, StorageError> {
    let placeholders: Vec<String> = (1..=event_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM notifications WHERE event_id IN ({}) ORDER BY created_at, id",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for id in event_ids {
        query = query.bind(id);
    }
    let rows = query.fetch_all(db.pool()).await?;
    rows.iter().map(delivery_of).collect()
}

fn delivery_of(row: &sqlx::any::AnyRow) -> Result<Delivery, StorageError> {
    Ok(Delivery {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        kind: row.try_get("kind")?,
        channel: row.try_get("channel")?,
        recipient: row.try_get("recipient")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}

/// One logged attempt to send an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: i64,
    pub at: i64,
    /// `sent`, `retry` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
}

/// The delivery log of one notification, first attempt first.
///
/// # Errors
/// The database failed.
pub async fn attempts(db: &Db, notification_id: &str) -> Result<Vec<Attempt>, StorageError> {
    let rows = sqlx::query(
        "SELECT attempt, at, outcome, error FROM notification_attempts
         WHERE notification_id = $1 ORDER BY attempt",
    )
    .bind(notification_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Attempt {
                attempt: row.try_get("attempt")?,
                at: row.try_get("at")?,
                outcome: row.try_get("outcome")?,
                error: row.try_get("error")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StorageError::from)
}
