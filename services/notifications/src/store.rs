//! Notifications' SQL: the local copy of each customer's contact details and preferences, the
//! notifications themselves (one row per event and channel), and the delivery log of every
//! email attempt.
//!
//! An email row moves `pending` → `sending` (claimed by one worker, with a lease) → `sent`, or
//! back to `pending` with a later `next_attempt_at`, or to `failed`. Every transition is a
//! conditional `UPDATE`, so replicas sharing the database never act on the same row at once.
//! A mailbox row is written `delivered`.

use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Db, Migration, StorageError, Tx};

use crate::domain::{Channel, Kind, Locale};

/// Notifications' schema: its tables, then the platform's inbox.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "notifications",
        sql: include_str!("../migrations/0001_notifications.sql"),
        postgres_sql: None,
    },
    mercato_messaging::inbox::MIGRATION,
];

/// States of a notification row.
pub mod state {
    /// A mailbox message: readable at once.
    pub const DELIVERED: &str = "delivered";
    /// An email waiting for its (next) attempt.
    pub const PENDING: &str = "pending";
    /// An email a worker has claimed and is sending.
    pub const SENDING: &str = "sending";
    /// The mail server accepted the email.
    pub const SENT: &str = "sent";
    /// Given up: attempts exhausted, refused for good, or the outcome unknown.
    pub const FAILED: &str = "failed";
}

/// What notifications knows about a customer, from customers' and identity's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerCopy {
    pub customer_id: String,
    pub email: String,
    pub name: String,
    pub email_enabled: bool,
    pub sms_enabled: bool,
    pub marketing_opt_in: bool,
    /// The customer's language tag as customers holds it (`de`, `pt-BR`).
    pub locale: String,
}

/// Records a customer seen only through identity's registration: default preferences, and
/// version 0 so that any event from customers replaces it.
///
/// # Errors
/// The database failed.
pub async fn seed_customer(
    tx: &mut Tx,
    id: &str,
    email: &str,
    name: &str,
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO notification_customers
             (customer_id, email, name, email_enabled, sms_enabled, marketing_opt_in, locale, version, updated_at)
         VALUES ($1, $2, $3, 1, 0, 0, 'en', 0, $4)
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(id)
    .bind(email)
    .bind(name)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the customer as of stream position `version`, unless a newer position is stored.
///
/// # Errors
/// The database failed.
pub async fn upsert_customer(
    tx: &mut Tx,
    copy: &CustomerCopy,
    version: i64,
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO notification_customers
             (customer_id, email, name, email_enabled, sms_enabled, marketing_opt_in, locale, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (customer_id) DO UPDATE SET email = $2, name = $3, email_enabled = $4,
             sms_enabled = $5, marketing_opt_in = $6, locale = $7, version = $8, updated_at = $9
         WHERE notification_customers.version < $8",
    )
    .bind(&copy.customer_id)
    .bind(&copy.email)
    .bind(&copy.name)
    .bind(i64::from(copy.email_enabled))
    .bind(i64::from(copy.sms_enabled))
    .bind(i64::from(copy.marketing_opt_in))
    .bind(&copy.locale)
    .bind(version)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The customer as notifications knows them, if at all.
///
/// # Errors
/// The database failed.
pub async fn customer<'e, E>(executor: E, id: &str) -> Result<Option<CustomerCopy>, StorageError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(
        "SELECT customer_id, email, name, email_enabled, sms_enabled, marketing_opt_in, locale
         FROM notification_customers WHERE customer_id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(CustomerCopy {
        customer_id: row.try_get("customer_id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        email_enabled: row.try_get::<i64, _>("email_enabled")? != 0,
        sms_enabled: row.try_get::<i64, _>("sms_enabled")? != 0,
        marketing_opt_in: row.try_get::<i64, _>("marketing_opt_in")? != 0,
        locale: row.try_get("locale")?,
    }))
}

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
    rows.iter()
        .map(|row| {
            Ok(MailboxItem {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                channel: row.try_get("channel")?,
                subject: row.try_get("subject")?,
                body: row.try_get("body")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StorageError::from)
}

/// An email a worker has claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailJob {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// Including the attempt this claim starts.
    pub attempts: i64,
}

/// Ids of emails whose next attempt is due, oldest due first.
///
/// # Errors
/// The database failed.
pub async fn due_emails(db: &Db, now: i64, limit: i64) -> Result<Vec<String>, StorageError> {
    let rows = sqlx::query(
        "SELECT id FROM notifications
         WHERE channel = 'email' AND state = 'pending' AND next_attempt_at <= $1
         ORDER BY next_attempt_at, id
         LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<_, _>>()
        .map_err(StorageError::from)
}

/// Claims a due email for the worker holding `token` until `lease_until`; `None` when another
/// worker got it first or it is no longer due.
///
/// # Errors
/// The database failed.
pub async fn claim(
    db: &Db,
    id: &str,
    token: &str,
    now: i64,
    lease_until: i64,
) -> Result<Option<EmailJob>, StorageError> {
    let row = sqlx::query(
        "UPDATE notifications
         SET state = 'sending', claim_token = $2, claimed_until = $3, attempts = attempts + 1, committing = 0
         WHERE id = $1 AND channel = 'email' AND state = 'pending' AND next_attempt_at <= $4
         RETURNING id, kind, recipient, subject, body, attempts",
    )
    .bind(id)
    .bind(token)
    .bind(lease_until)
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(EmailJob {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        recipient: row.try_get::<Option<String>, _>("recipient")?.unwrap_or_default(),
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        attempts: row.try_get("attempts")?,
    }))
}

/// Notes that the worker holding `token` is about to end the message text: from here on a
/// crash means "outcome unknown", never "send again". `false` when the claim was lost.
///
/// # Errors
/// The database failed.
pub async fn mark_committing(db: &Db, id: &str, token: &str) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "UPDATE notifications SET committing = 1
         WHERE id = $1 AND claim_token = $2 AND state = 'sending'",
    )
    .bind(id)
    .bind(token)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Sent {
        at: i64,
    },
    Retry {
        at: i64,
        next_attempt_at: i64,
        error: String,
    },
    Failed {
        at: i64,
        error: String,
    },
}

impl Finish {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Sent { .. } => state::SENT,
            Self::Retry { .. } => "retry",
            Self::Failed { .. } => state::FAILED,
        }
    }
}

/// Records the end of attempt `attempt` by the worker holding `token`, and logs it, in one
/// transaction. `false` when the claim was lost (nothing is written then).
///
/// # Errors
/// The database failed.
pub async fn finish(
    db: &Db,
    id: &str,
    token: &str,
    attempt: i64,
    finish: &Finish,
) -> Result<bool, StorageError> {
    let mut tx = db.begin().await?;
    let (at, error) = match finish {
        // A sweep may have called a slow but successful send "unknown"; the server's 250 wins.
        Finish::Sent { at } => {
            let done = sqlx::query(
                "UPDATE notifications SET state = 'sent', sent_at = $3, last_error = NULL, claimed_until = NULL
                 WHERE id = $1 AND claim_token = $2 AND state IN ('sending', 'failed')",
            )
            .bind(id)
            .bind(token)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
            (*at, None)
        }
        Finish::Retry {
            at,
            next_attempt_at,
            error,
        } => {
            let done = sqlx::query(
                "UPDATE notifications SET state = 'pending', next_attempt_at = $3, last_error = $4,
                     claim_token = NULL, claimed_until = NULL, committing = 0
                 WHERE id = $1 AND claim_token = $2 AND state = 'sending'",
            )
            .bind(id)
            .bind(token)
            .bind(next_attempt_at)
            .bind(error)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
            (*at, Some(error.as_str()))
        }
        Finish::Failed { at, error } => {
            let done = sqlx::query(
                "UPDATE notifications SET state = 'failed', last_error = $3, claimed_until = NULL
                 WHERE id = $1 AND claim_token = $2 AND state = 'sending'",
            )
            .bind(id)
            .bind(token)
            .bind(error)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
            (*at, Some(error.as_str()))
        }
    };
    log_attempt(&mut tx, id, attempt, at, finish.outcome(), error).await?;
    tx.commit().await?;
    Ok(true)
}

async fn log_attempt(
    tx: &mut Tx,
    id: &str,
    attempt: i64,
    at: i64,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), StorageError> {
    // The same attempt may be logged twice (a sweep, then the slow worker it gave up on): the
    // later word is the truer one.
    sqlx::query(
        "INSERT INTO notification_attempts (notification_id, attempt, at, outcome, error)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (notification_id, attempt) DO UPDATE SET at = $3, outcome = $4, error = $5",
    )
    .bind(id)
    .bind(attempt)
    .bind(at)
    .bind(outcome)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An email whose claim expired, as [`recover_stale`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub id: String,
    pub kind: String,
    pub state: String,
}

/// What a sweep writes for a worker that stopped after it began ending the message text.
pub const OUTCOME_UNKNOWN: &str = "the worker stopped while the mail server was accepting the message; it may have been sent, so it is not sent again";
/// What a sweep writes for a worker that stopped before the message text was complete.
pub const INTERRUPTED: &str = "the worker stopped before the message was complete; nothing was sent";

/// Settles emails whose worker vanished (its lease ran out): one that had begun ending the
/// message text fails as "outcome unknown", since sending it again could deliver it twice;
/// one that had not is due again, or failed once `max_attempts` are used up.
///
/// # Errors
/// The database failed.
pub async fn recover_stale(db: &Db, now: i64, max_attempts: i64) -> Result<Vec<Recovered>, StorageError> {
    let mut tx = db.begin().await?;
    // The claim token stays, so a worker that was only slow can still record its success.
    let unknown = sqlx::query(
        "UPDATE notifications SET state = 'failed', last_error = $1, claimed_until = NULL
         WHERE channel = 'email' AND state = 'sending' AND committing = 1 AND claimed_until <= $2
         RETURNING id, kind, attempts, state",
    )
    .bind(OUTCOME_UNKNOWN)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let interrupted = sqlx::query(
        "UPDATE notifications
         SET state = CASE WHEN attempts >= $3 THEN 'failed' ELSE 'pending' END,
             next_attempt_at = $2, last_error = $1, claim_token = NULL, claimed_until = NULL
         WHERE channel = 'email' AND state = 'sending' AND committing = 0 AND claimed_until <= $2
         RETURNING id, kind, attempts, state",
    )
    .bind(INTERRUPTED)
    .bind(now)
    .bind(max_attempts)
    .fetch_all(&mut *tx)
    .await?;
    let mut recovered = Vec::new();
    for (rows, error) in [(unknown, OUTCOME_UNKNOWN), (interrupted, INTERRUPTED)] {
        for row in rows {
            let id: String = row.try_get("id")?;
            let attempt: i64 = row.try_get("attempts")?;
            let state: String = row.try_get("state")?;
            let outcome = if state == state::FAILED {
                state::FAILED
            } else {
                "retry"
            };
            log_attempt(&mut tx, &id, attempt, now, outcome, Some(error)).await?;
            recovered.push(Recovered {
                id,
                kind: row.try_get("kind")?,
                state,
            });
        }
    }
    tx.commit().await?;
    Ok(recovered)
}

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

/// Every notification for a customer on every channel, oldest first.
///
/// # Errors
/// The database failed.
pub async fn deliveries(db: &Db, customer_id: &str) -> Result<Vec<Delivery>, StorageError> {
    let rows = sqlx::query(
        "SELECT id, event_id, kind, channel, recipient, state, attempts, last_error, created_at, sent_at
         FROM notifications WHERE customer_id = $1
         ORDER BY created_at, id",
    )
    .bind(customer_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
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
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StorageError::from)
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
