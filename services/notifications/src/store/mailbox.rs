//! Notifications as written, once per event and channel, and the customer's mailbox read a
//! page at a time, newest first.

use mercato_storage::sqlx;
use mercato_storage::{Db, StorageError, Tx};

use super::state;
use crate::domain::{Channel, Kind, Locale};

/// A notification to write.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub id: &'a str,
    pub event_id: &'a str,
    pub channel: Channel,
    pub customer_id: &'a str,
    pub kind: Kind,
    pub locale: Locale,
    /// The address for an email; none for the mailbox.
    pub recipient: Option<&'a str>,
    pub subject: &'a str,
    pub body: &'a str,
    pub now: i64,
}

/// Writes a notification; `false` when this event already has one on this channel (a
/// redelivery), which is then left as it was.
///
/// # Errors
/// The database failed.
pub async fn insert_notification(tx: &mut Tx, n: &NewNotification<'_>) -> Result<bool, StorageError> {
    let (state, sent_at) = match n.channel {
        Channel::Mailbox => (state::DELIVERED, Some(n.now)),
        Channel::Email => (state::PENDING, None),
    };
    let done = sqlx::query(
        "INSERT INTO notifications (id, event_id, channel, customer_id, kind, locale, recipient, subject,
             body, state, attempts, next_attempt_at, committing, created_at, sent_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, 0, $11, $12)
         ON CONFLICT (event_id, channel) DO NOTHING",
    )
    .bind(n.id)
    .bind(n.event_id)
    .bind(n.channel.as_str())
    .bind(n.customer_id)
    .bind(n.kind.as_str())
    .bind(n.locale.as_str())
    .bind(n.recipient)
    .bind(n.subject)
    .bind(n.body)
    .bind(state)
    .bind(n.now)
    .bind(sent_at)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

mercato_kit::row_struct! {
    /// A message in a customer's mailbox.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct MailboxItem {
        pub id: String,
        pub kind: String,
        pub channel: String,
        pub subject: String,
        pub body: String,
        pub created_at: i64,
    }
}

/// Where a page of the mailbox ends: the last item's position in newest-first order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

/// Up to `limit` of the customer's mailbox messages, newest first, after `after`.
///
/// # Errors
/// The database failed.
pub async fn mailbox_page(
    db: &Db,
    customer_id: &str,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<MailboxItem>, StorageError> {
    // The first page starts after a position later than any message, so one statement serves.
    let (created_at, id) = after.map_or((i64::MAX, ""), |c| (c.created_at, c.id.as_str()));
    let rows = sqlx::query(
        "SELECT id, kind, channel, subject, body, created_at FROM notifications
         WHERE customer_id = $1 AND channel = 'mailbox'
           AND (created_at < $2 OR (created_at = $2 AND id < $3))
         ORDER BY created_at DESC, id DESC
         LIMIT $4",
    )
    .bind(customer_id)
    .bind(created_at)
    .bind(id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(MailboxItem::from_row).collect()
}
