//! The email worker: sends due email rows through SMTP, at most once each.
//!
//! Each pass first settles claims whose worker vanished, then claims due rows one by one with
//! a conditional `UPDATE` (so replicas never take the same row), sends, and records the
//! outcome with its log entry. The row is marked "committing" just before the `.` that ends the
//! message text: after that point a lost answer or a crash makes the email `failed` (outcome
//! unknown) instead of sending it again, so no email ever goes out twice. A refusal that says
//! "try later" (4xx), or a server that is away, is retried after a jittered, growing backoff
//! until `max_attempts`; then the email is `failed` with the last error.

use std::sync::Arc;
use std::time::Duration;

use mercato_runtime::CancellationToken;
use mercato_storage::{Db, StorageError, now_millis};
use tokio::sync::Notify;

use crate::metrics::NotificationMetrics;
use crate::smtp::{Mail, SmtpClient, SmtpConfig, SmtpError};
use crate::store::{self, EmailJob, Finish};

/// Emails claimed per pass; a full batch means more may be due, so the next pass starts at once.
const BATCH: i64 = 16;
/// Added to a claim's lease beyond the two bounded SMTP phases, for the database writes between.
const LEASE_SLACK_MS: u64 = 30_000;
/// The exponent stops growing here: the longest wait is 64 times `backoff_ms`.
const MAX_DOUBLINGS: u32 = 6;

/// The delay before the next attempt after `attempt` (1-based) failed: `base_ms` doubled per
/// attempt, at most 64 times `base_ms`, with "equal jitter": half of it fixed and half scaled by
/// `unit` (0 to 1), so emails that failed together do not all come back together, and none
/// comes back at once.
#[must_use]
pub fn backoff(base_ms: u64, attempt: u32, unit: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(MAX_DOUBLINGS);
    let half = base_ms.saturating_mul(1 << doublings) / 2;
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Float to integer casts saturate, and the product is at most `half`.
    let jitter = ((half as f64) * unit) as u64;
    Duration::from_millis(half.saturating_add(jitter.min(half)))
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    /// Nothing was sent: the conversation was dropped before the message was complete.
    #[error("the delivery could not be recorded, so nothing was sent: {0}")]
    Storage(#[from] StorageError),
    /// Another worker owns the row now (our lease ran out); it was left alone.
    #[error("the claim was lost")]
    ClaimLost,
}

impl SendError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Smtp(e) => e.is_transient(),
            Self::Storage(_) => true,
            Self::ClaimLost => false,
        }
    }
}

/// Sends queued email.
#[derive(Debug)]
pub struct Worker {
    db: Db,
    client: SmtpClient,
    config: SmtpConfig,
    poll: Duration,
    wake: Arc<Notify>,
    metrics: NotificationMetrics,
}

impl Worker {
    #[must_use]
    pub fn new(
        db: Db,
        config: SmtpConfig,
        poll: Duration,
        wake: Arc<Notify>,
        metrics: NotificationMetrics,
    ) -> Self {
        Self {
            db,
            client: SmtpClient::new(&config),
            config,
            poll,
            wake,
            metrics,
        }
    }

    /// Works until `shutdown`; a failing database or mail server is waited out, never fatal.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let full = match self.pass(&shutdown).await {
                Ok(due) => due >= BATCH as usize,
                Err(e) => {
                    tracing::warn!(error = %e, "email delivery pass failed; trying again");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    fn lease(&self) -> i64 {
        let ms = self
            .config
            .timeout_ms
            .saturating_mul(2)
            .saturating_add(LEASE_SLACK_MS);
        i64::try_from(ms).unwrap_or(i64::MAX)
    }

    fn max_attempts(&self) -> i64 {
        i64::from(self.config.max_attempts)
    }

    /// One pass; returns how many emails were due.
    ///
    /// # Errors
    /// The database failed; what was done so far stays done.
    pub async fn pass(&self, shutdown: &CancellationToken) -> Result<usize, StorageError> {
        let now = now_millis();
        for stale in store::recover_stale(&self.db, now, self.max_attempts()).await? {
            tracing::warn!(notification_id = %stale.id, state = %stale.state,
                "an email's worker stopped mid-send; settled it");
            let outcome = if stale.state == store::state::FAILED {
                "failed"
            } else {
                "retried"
            };
            self.metrics.record(&stale.kind, "email", outcome);
        }
        let due = store::due_emails(&self.db, now, BATCH).await?;
        for id in &due {
            if shutdown.is_cancelled() {
                break;
            }
            self.deliver(id).await?;
        }
        Ok(due.len())
    }

    async fn deliver(&self, id: &str) -> Result<(), StorageError> {
        let token = uuid::Uuid::new_v4().to_string();
        let now = now_millis();
        let Some(job) = store::claim(&self.db, id, &token, now, now.saturating_add(self.lease())).await?
        else {
            return Ok(());
        };
        let result = self.send(&job, &token).await;
        let at = now_millis();
        let (finish, outcome) = match result {
            Ok(()) => (Finish::Sent { at }, "sent"),
            Err(SendError::ClaimLost) => {
                tracing::warn!(notification_id = %job.id, "lost the claim on an email before sending it; leaving it to its new owner");
                return Ok(());
            }
            Err(e) if e.is_transient() && job.attempts < self.max_attempts() => {
                let attempt = u32::try_from(job.attempts).unwrap_or(u32::MAX);
                let delay = backoff(self.config.backoff_ms, attempt, rand::random::<f64>());
                let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                tracing::warn!(notification_id = %job.id, attempt = job.attempts, error = %e, delay_ms = delay,
                    "email not sent; will try again");
                let retry = Finish::Retry {
                    at,
                    next_attempt_at: at.saturating_add(delay),
                    error: e.to_string(),
                };
                (retry, "retried")
            }
            Err(e) => {
                tracing::error!(notification_id = %job.id, attempt = job.attempts, error = %e, "email failed for good");
                let failed = Finish::Failed {
                    at,
                    error: e.to_string(),
                };
                (failed, "failed")
            }
        };
        if self.record(&job, &token, &finish).await? {
            self.metrics.record(&job.kind, "email", outcome);
        } else {
            tracing::warn!(notification_id = %job.id, "the claim ran out before the outcome was recorded");
        }
        Ok(())
    }

    async fn send(&self, job: &EmailJob, token: &str) -> Result<(), SendError> {
        let domain = self
            .config
            .from
            .rsplit_once('@')
            .map_or("mercato.local", |(_, d)| d);
        let mail = Mail {
            from: self.config.from.clone(),
            to: job.recipient.clone(),
            subject: job.subject.clone(),
            body: job.body.clone(),
            message_id: format!("{}@{domain}", job.id),
        };
        let prepared = self.client.prepare(&mail).await?;
        match store::mark_committing(&self.db, &job.id, token).await {
            Ok(true) => Ok(prepared.commit().await?),
            Ok(false) => {
                prepared.abort();
                Err(SendError::ClaimLost)
            }
            Err(e) => {
                prepared.abort();
                Err(e.into())
            }
        }
    }

    /// Records the outcome, trying again briefly on a busy database: after a `250` an
    /// unrecorded success would later be reported as "outcome unknown".
    async fn record(&self, job: &EmailJob, token: &str, finish: &Finish) -> Result<bool, StorageError> {
        let mut pause = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            tries += 1;
            match store::finish(&self.db, &job.id, token, job.attempts, finish).await {
                Err(e) if e.is_transient() && tries < 4 => {
                    tracing::warn!(notification_id = %job.id, error = %e, "cannot record an email's outcome yet");
                    tokio::time::sleep(pause).await;
                    pause *= 3;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 1_000;

    #[test]
    fn backoff_doubles_per_attempt_within_its_jitter_band() {
        for (attempt, full_ms) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 8_000)] {
            assert_eq!(backoff(BASE, attempt, 0.0), Duration::from_millis(full_ms / 2));
            assert_eq!(backoff(BASE, attempt, 1.0), Duration::from_millis(full_ms));
            let mid = backoff(BASE, attempt, 0.5);
            assert!(mid > Duration::from_millis(full_ms / 2) && mid < Duration::from_millis(full_ms));
        }
    }

    #[test]
    fn backoff_stops_growing_and_never_overflows() {
        assert_eq!(backoff(BASE, 7, 1.0), Duration::from_millis(64_000));
        assert_eq!(backoff(BASE, u32::MAX, 1.0), Duration::from_millis(64_000));
        assert_eq!(backoff(u64::MAX, 3, 1.0), Duration::from_millis(u64::MAX / 2 * 2));
        assert_eq!(backoff(BASE, 0, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn jitter_outside_zero_to_one_is_clamped() {
        assert_eq!(backoff(BASE, 1, -3.0), Duration::from_millis(500));
        assert_eq!(backoff(BASE, 1, 7.0), Duration::from_millis(1_000));
        assert_eq!(backoff(BASE, 1, f64::NAN), Duration::from_millis(500));
    }

    #[test]
    fn only_send_errors_worth_retrying_are_retried() {
        assert!(SendError::Smtp(SmtpError::Timeout(Duration::from_secs(1))).is_transient());
        assert!(!SendError::Smtp(SmtpError::OutcomeUnknown("lost".into())).is_transient());
        assert!(!SendError::ClaimLost.is_transient());
    }
}
