//! What happened to a customer's notifications: every one on every channel, and each email's
//! logged attempts; for operators and tests.
use mercato_kit::store::placeholders;

use mercato_storage::sqlx;
use mercato_storage::{Db, StorageError};

mercato_kit::row_struct! {
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
    rows.iter().map(Delivery::from_row).collect()
}

/// Every notification made for one of `event_ids`, on every channel, oldest first.
///
/// # Errors
/// The database failed.
pub async fn deliveries_for_events(db: &Db, event_ids: &[String]) -> Result<Vec<Delivery>, StorageError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM notifications WHERE event_id IN ({}) ORDER BY created_at, id",
        placeholders(event_ids.len())
    );
    let mut query = sqlx::query(&sql);
    for id in event_ids {
        query = query.bind(id);
    }
    let rows = query.fetch_all(db.pool()).await?;
    rows.iter().map(Delivery::from_row).collect()
}

mercato_kit::row_struct! {
    /// One logged attempt to send an email.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Attempt {
        pub attempt: i64,
        pub at: i64,
        /// `sent`, `retry` or `failed`.
        pub outcome: String,
        pub error: Option<String>,
    }
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
    rows.iter().map(Attempt::from_row).collect()
}
