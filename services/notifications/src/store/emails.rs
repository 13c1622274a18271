//! The email queue: due emails claimed by one worker under a lease, each attempt's end
//! recorded with its log entry, and emails whose worker vanished settled by a sweep.

use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Db, StorageError, Tx};

use super::state;

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
    // Each outcome is written only while `token` still holds the claim: one row or none.
    let (fenced, at, error) = match finish {
        // A sweep may have called a slow but successful send "unknown"; the server's 250 wins.
        Finish::Sent { at } => (
            sqlx::query(
                "UPDATE notifications SET state = 'sent', sent_at = $3, last_error = NULL, claimed_until = NULL
                 WHERE id = $1 AND claim_token = $2 AND state IN ('sending', 'failed')",
            )
            .bind(id)
            .bind(token)
            .bind(at),
            *at,
            None,
        ),
        Finish::Retry {
            at,
            next_attempt_at,
            error,
        } => (
            sqlx::query(
                "UPDATE notifications SET state = 'pending', next_attempt_at = $3, last_error = $4,
                     claim_token = NULL, claimed_until = NULL, committing = 0
                 WHERE id = $1 AND claim_token = $2 AND state = 'sending'",
            )
            .bind(id)
            .bind(token)
            .bind(next_attempt_at)
            .bind(error),
            *at,
            Some(error.as_str()),
        ),
        Finish::Failed { at, error } => (
            sqlx::query(
                "UPDATE notifications SET state = 'failed', last_error = $3, claimed_until = NULL
                 WHERE id = $1 AND claim_token = $2 AND state = 'sending'",
            )
            .bind(id)
            .bind(token)
            .bind(error),
            *at,
            Some(error.as_str()),
        ),
    };
    if fenced.execute(&mut *tx).await?.rows_affected() != 1 {
        return Ok(false);
    }
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
