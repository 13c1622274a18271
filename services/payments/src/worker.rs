//! The payment worker: makes the charges and refunds the inbox recorded.
//!
//! Each pass claims due rows (a conditional UPDATE that leases the row, so replicas never call
//! the provider for the same payment at once), calls the provider outside any transaction, and
//! then records the answer together with its event in one transaction, fenced by the lease.
//! A crash at any point leaves the row due again once its lease ends; the provider sees the same
//! idempotency key on the next call, so nothing is charged or refunded twice.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use mercato_messaging::{Envelope, Outbox, outbox};
use mercato_storage::{Db, StorageError, Tx, now_millis};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::{Backoff, ChargeFailure, FailureReason, Next, PaymentStatus, after_failed_charge};
use crate::events;
use crate::metrics::PaymentMetrics;
use crate::provider::{ChargeRequest, ProviderClient, ProviderConfig, ProviderError};
use crate::store::{self, Call, Claim};

/// Why recording a provider's answer failed.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot build the event: {0}")]
    Envelope(#[from] mercato_messaging::EnvelopeError),
}

/// Everything a worker needs.
#[derive(Debug, Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    outbox: Outbox,
    provider: ProviderClient,
    config: ProviderConfig,
    backoff: Backoff,
    poll: Duration,
    wake: Arc<Notify>,
    metrics: PaymentMetrics,
}

impl Worker {
    /// `wake` is notified when the inbox recorded work, so it starts without waiting for a poll.
    #[must_use]
    pub fn new(
        db: Db,
        outbox: Outbox,
        provider: ProviderClient,
        config: ProviderConfig,
        poll: Duration,
        wake: Arc<Notify>,
        metrics: PaymentMetrics,
    ) -> Self {
        let backoff = Backoff {
            base: Duration::from_millis(config.backoff_ms),
            max: Duration::from_millis(config.max_backoff_ms),
        };
        Self {
            inner: Arc::new(Inner {
                db,
                outbox,
                provider,
                config,
                backoff,
                poll,
                wake,
                metrics,
            }),
        }
    }

    /// Works until `shutdown`; calls in flight then give their rows back and the loop returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut running = JoinSet::new();
        loop {
            let free = self.inner.config.concurrency.saturating_sub(running.len());
            if free > 0 {
                for claim in self.inner.claim_due(free).await {
                    let inner = Arc::clone(&self.inner);
                    let token = shutdown.clone();
                    running.spawn(async move { inner.process(claim, token).await });
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(self.inner.poll) => {}
            }
        }
        while running.join_next().await.is_some() {}
    }
}

impl Inner {
    /// How long a claim holds a row: a whole provider call plus room to record its answer.
    fn lease(&self) -> i64 {
        i64::try_from(self.config.timeout_ms.saturating_add(1_000)).unwrap_or(i64::MAX)
    }

    /// Claims up to `limit` due payments, in one transaction; a row that cannot be claimed now is
    /// left for the next pass.
    async fn claim_due(&self, limit: usize) -> Vec<Claim> {
        let now = now_millis();
        let due = match store::due(&self.db, now, limit).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for due payments; retrying");
                return Vec::new();
            }
        };
        if due.is_empty() {
            return Vec::new();
        }
        match store::claim(&self.db, &due, now, now + self.lease()).await {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(due = due.len(), error = %e, "cannot claim due payments; retrying");
                Vec::new()
            }
        }
    }

    async fn process(&self, claim: Claim, shutdown: CancellationToken) {
        let order_id = claim.payment.order_id.clone();
        let traceparent = claim.payment.traceparent.as_deref();
        let result = match claim.payment.status {
            PaymentStatus::Pending => {
                let span = mercato_runtime::trace::resume("payments", "charge", traceparent);
                self.charge(&claim, &shutdown).instrument(span).await
            }
            PaymentStatus::RefundPending => {
                let span = mercato_runtime::trace::resume("payments", "refund", traceparent);
                self.refund(&claim, &shutdown).instrument(span).await
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            // The lease runs out and the row is picked up again; the provider's idempotency
            // makes the repeated call harmless.
            tracing::warn!(%order_id, error = %e, "cannot record the provider's answer; will retry");
        }
    }

    async fn charge(&self, claim: &Claim, shutdown: &CancellationToken) -> Result<(), RecordError> {
        let payment = &claim.payment;
        let request = ChargeRequest {
            idempotency_key: &payment.idempotency_key,
            amount_minor: payment.amount_minor,
            currency: &payment.currency,
            card_token: &payment.card_token,
            correlation_id: header_safe(payment.correlation_id.as_deref()),
        };
        let timer = Timer::start();
        let result = tokio::select! {
            result = self.provider.charge(&request) => result,
            () = shutdown.cancelled() => return self.give_back(claim, &timer).await,
        };
        self.metrics
            .call("charge", result_label(&result), timer.started.elapsed());
        let error = match result {
            Ok(charge) => {
                let call = timer.call(SUCCEEDED, Some(&charge.id), None);
                return self.record_capture(claim, &charge.id, &call).await;
            }
            Err(ProviderError::NotSent { reason, retry_after }) => {
                return self.put_back_unsent(claim, &reason, retry_after).await;
            }
            Err(error) => error,
        };
        let failure = if error.is_transient() {
            ChargeFailure::Unknown
        } else {
            ChargeFailure::Refused
        };
        let attempt = u32::try_from(payment.attempts).unwrap_or(u32::MAX);
        let next = after_failed_charge(
            failure,
            attempt,
            self.config.max_attempts,
            &self.backoff,
            rand::random::<f64>(),
        );
        let text = error.to_string();
        let call = timer.call(error.kind(), None, Some(&text));
        let error = text.as_str();
        match next {
            // A timed-out call may still have charged: never settle it as failed. Tell the saga
            // once, then keep asking with the same key; a charge that lands is captured, and
            // the saga (its order cancelled) has it refunded.
            Next::Fail(FailureReason::ProviderUnavailable) => {
                let at = now_millis() + millis(self.backoff.max);
                if payment.failure_reported {
                    store::retry_at(&self.db, claim, at, error, Some(&call)).await?;
                    return Ok(());
                }
                tracing::warn!(order_id = %payment.order_id, attempt, %error,
                    "charge outcome still unknown; reporting failure and reconciling");
                self.record_unknown(claim, &call, at).await
            }
            Next::Fail(reason) => {
                tracing::info!(order_id = %payment.order_id, attempt, %error, "charge failed");
                self.record_failure(claim, reason, &call).await
            }
            Next::RetryIn(wait) => {
                tracing::info!(order_id = %payment.order_id, attempt, %error,
                    retry_in_ms = wait.as_millis(), "charge outcome unknown; retrying with the same key");
                let at = now_millis() + millis(wait);
                store::retry_at(&self.db, claim, at, error, Some(&call)).await?;
                Ok(())
            }
        }
    }

    async fn refund(&self, claim: &Claim, shutdown: &CancellationToken) -> Result<(), RecordError> {
        let payment = &claim.payment;
        let attempt = u32::try_from(payment.attempts).unwrap_or(u32::MAX);
        let Some(charge_id) = payment.provider_charge_id.as_deref() else {
            // Only a capture leads here, and it stores the charge id; keep the row visible.
            tracing::error!(order_id = %payment.order_id, "refund pending without a provider charge id");
            let at = now_millis() + millis(self.backoff.max);
            store::retry_at(&self.db, claim, at, "no provider charge id to refund", None).await?;
            return Ok(());
        };
        let key = format!("refund:{}", payment.idempotency_key);
        let correlation = header_safe(payment.correlation_id.as_deref());
        let timer = Timer::start();
        let result = tokio::select! {
            result = self.provider.refund(charge_id, &key, correlation) => result,
            () = shutdown.cancelled() => return self.give_back(claim, &timer).await,
        };
        self.metrics
            .call("refund", result_label(&result), timer.started.elapsed());
        match result {
            Ok(refund) => {
                let call = timer.call(SUCCEEDED, Some(&refund.id), None);
                self.record_refund(claim, &refund.id, &call).await
            }
            Err(ProviderError::NotSent { reason, retry_after }) => {
                self.put_back_unsent(claim, &reason, retry_after).await
            }
            Err(e) => {
                // A refund is never given up on: money taken for an order that did not happen
                // must go back. A refusal means something is wrong that needs an operator.
                let wait = self.backoff.delay(attempt, rand::random::<f64>());
                if e.is_transient() {
                    tracing::warn!(order_id = %payment.order_id, attempt, error = %e, "refund failed; retrying");
                } else {
                    tracing::error!(order_id = %payment.order_id, attempt, error = %e,
                        "the provider refused a refund; retrying, an operator should look");
                }
                let text = e.to_string();
                let call = timer.call(e.kind(), None, Some(&text));
                store::retry_at(&self.db, claim, now_millis() + millis(wait), &text, Some(&call)).await?;
                Ok(())
            }
        }
    }

    async fn record_capture(
        &self,
        claim: &Claim,
        charge_id: &str,
        call: &Call<'_>,
    ) -> Result<(), RecordError> {
        let mut tx = self.db.begin().await?;
        let Some(payment) = store::capture(&mut tx, claim, charge_id, now_millis()).await? else {
            lost(claim);
            return Ok(());
        };
        self.commit_answer(tx, claim, call, events::captured(&payment)?)
            .await?;
        self.metrics.settled("captured");
        if payment.status == PaymentStatus::RefundPending {
            tracing::info!(order_id = %payment.order_id, "captured after a refund was asked for; refunding");
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn record_failure(
        &self,
        claim: &Claim,
        reason: FailureReason,
        call: &Call<'_>,
    ) -> Result<(), RecordError> {
        let mut tx = self.db.begin().await?;
        let error = call.error.unwrap_or(call.outcome);
        if !store::fail(&mut tx, claim, error, now_millis()).await? {
            lost(claim);
            return Ok(());
        }
        self.commit_answer(tx, claim, call, events::failed(&claim.payment, reason)?)
            .await?;
        self.metrics.settled(match reason {
            FailureReason::Declined => "declined",
            FailureReason::ProviderUnavailable => "provider_unavailable",
        });
        Ok(())
    }

    async fn record_unknown(&self, claim: &Claim, call: &Call<'_>, next_at: i64) -> Result<(), RecordError> {
        let mut tx = self.db.begin().await?;
        let error = call.error.unwrap_or(call.outcome);
        if !store::report_unknown(&mut tx, claim, error, now_millis(), next_at).await? {
            lost(claim);
            return Ok(());
        }
        let answer = events::failed(&claim.payment, FailureReason::ProviderUnavailable)?;
        self.commit_answer(tx, claim, call, answer).await?;
        self.metrics.settled("provider_unavailable");
        Ok(())
    }

    async fn record_refund(
        &self,
        claim: &Claim,
        refund_id: &str,
        call: &Call<'_>,
    ) -> Result<(), RecordError> {
        let mut tx = self.db.begin().await?;
        if !store::refunded(&mut tx, claim, refund_id, now_millis()).await? {
            lost(claim);
            return Ok(());
        }
        self.commit_answer(tx, claim, call, events::refunded(&claim.payment)?)
            .await?;
        self.metrics.refunded();
        Ok(())
    }

    /// Logs `call` and queues `answer` in the transaction that recorded the call's outcome
    /// under the lease, then commits them together.
    async fn commit_answer(
        &self,
        mut tx: Tx,
        claim: &Claim,
        call: &Call<'_>,
        mut answer: Envelope,
    ) -> Result<(), RecordError> {
        store::record_attempt(&mut tx, claim, call).await?;
        outbox::append(&mut tx, &mut answer).await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    /// Shutdown interrupted the call: the row is due again at once, for whichever instance
    /// runs next.
    /// Nothing reached the provider, so nothing is known that was not known before: the row is
    /// due again once the guard may let a call through, and the attempt does not count.
    async fn put_back_unsent(
        &self,
        claim: &Claim,
        reason: &str,
        retry_after: Duration,
    ) -> Result<(), RecordError> {
        tracing::info!(order_id = %claim.payment.order_id, %reason,
            retry_in_ms = retry_after.as_millis(), "provider call not sent; trying again later");
        store::put_back_unsent(&self.db, claim, now_millis() + millis(retry_after)).await?;
        Ok(())
    }

    async fn give_back(&self, claim: &Claim, timer: &Timer) -> Result<(), RecordError> {
        let call = timer.call("interrupted", None, Some("shutdown interrupted the call"));
        store::release(&self.db, claim, now_millis(), &call).await?;
        Ok(())
    }
}

/// The outcome logged for a call the provider accepted.
const SUCCEEDED: &str = "succeeded";

/// When a provider call was sent, by the wall clock for the log and monotonically for its length.
struct Timer {
    started_at: i64,
    started: Instant,
}

impl Timer {
    fn start() -> Self {
        Self {
            started_at: now_millis(),
            started: Instant::now(),
        }
    }

    fn call<'a>(&self, outcome: &'a str, provider_id: Option<&'a str>, error: Option<&'a str>) -> Call<'a> {
        Call {
            started_at: self.started_at,
            duration_ms: millis(self.started.elapsed()),
            outcome,
            provider_id,
            error,
        }
    }
}

/// Another worker took the row over after our lease ran out; its answer stands.
fn lost(claim: &Claim) {
    tracing::warn!(order_id = %claim.payment.order_id, "lease lost before recording the provider's answer");
}

fn result_label<T>(result: &Result<T, ProviderError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A correlation id from an envelope, if it can travel as a header.
fn header_safe(id: Option<&str>) -> Option<&str> {
    id.filter(|id| {
        !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    })
}
