//! The inbox: an idempotent consumer.
//!
//! For each delivery, one transaction on the service's own database: skip the event if this
//! subscriber already handled its id; otherwise run the handler and record the id (and the
//! stream position) before committing. A redelivery therefore changes nothing, and a crash at any
//! point leaves either everything or nothing.
//!
//! Order: every envelope carries its position in its stream. An event that arrives before its
//! predecessor (a redelivery overtook it) is put back for a moment, so a stream's events are
//! applied in order whatever order the bus delivers them in. A handler error is retried with
//! backoff; after `max_attempts`, or at once for a permanent error, the message is parked in the
//! dead-letter store with its error, the stream moves past it, and the consumer goes on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Db, Migration, StorageError, Tx, now_millis};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Consumer, ConsumerSpec, Delivery};
use crate::envelope::Envelope;

/// The inbox tables; a consuming service lists this among its migrations.
pub const MIGRATION: Migration = Migration::new(1002, "inbox", include_str!("../migrations/inbox.sql"));

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (a busy database, a dependency briefly away).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (a payload that does not decode): park the message at once.
    #[error("{0}")]
    Permanent(String),
}

impl From<StorageError> for HandlerError {
    fn from(e: StorageError) -> Self {
        if e.is_transient() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

impl From<crate::envelope::EnvelopeError> for HandlerError {
    fn from(e: crate::envelope::EnvelopeError) -> Self {
        Self::Permanent(e.to_string())
    }
}

/// A boxed handler future.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// Applies one event inside the inbox's transaction. Its database effects must go through `tx`.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, envelope: &'a Envelope, tx: &'a mut Tx) -> HandlerFuture<'a>;

    /// Called after a handled event's transaction committed (to wake a relay or a projection).
    fn committed(&self) {}
}

/// How a consumer retries and waits (`[inbox]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// Deliveries of one message before it is parked.
    pub max_attempts: u32,
    /// Wait before each retry; the last value repeats.
    pub backoff_ms: Vec<u64>,
    /// Wait before an event that overtook its predecessor is offered again.
    pub reorder_delay_ms: u64,
    /// After this many reorder waits an event is applied even though a predecessor is missing.
    pub max_reorder_waits: u32,
    pub batch_size: usize,
    pub fetch_wait_ms: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_ms: vec![200, 1_000, 5_000, 15_000],
            reorder_delay_ms: 100,
            max_reorder_waits: 300,
            batch_size: 32,
            fetch_wait_ms: 1_000,
        }
    }
}

impl InboxConfig {
    fn backoff(&self, attempt: u32) -> Duration {
        let i = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        let ms = self
            .backoff_ms
            .get(i)
            .or(self.backoff_ms.last())
            .copied()
            .unwrap_or(1_000);
        Duration::from_millis(ms)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    subscriber: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriberLabels {
    subscriber: String,
}

/// Per-consumer metrics: outcomes, handler errors and lag.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
    errors: Family<SubscriberLabels, Counter>,
    lag: Family<SubscriberLabels, Gauge>,
}

impl ConsumerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            outcomes: Family::default(),
            errors: Family::default(),
            lag: Family::default(),
        };
        registry.register(
            "mercato_consumer_messages",
            "Messages a consumer finished, by outcome (applied, duplicate, parked)",
            metrics.outcomes.clone(),
        );
        registry.register(
            "mercato_consumer_handler_errors",
            "Handler failures",
            metrics.errors.clone(),
        );
        registry.register(
            "mercato_consumer_lag",
            "Messages of the category not yet acknowledged",
            metrics.lag.clone(),
        );
        metrics
    }

    fn outcome(&self, subscriber: &str, outcome: &str) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                subscriber: subscriber.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    fn error(&self, subscriber: &str) {
        self.errors
            .get_or_create(&SubscriberLabels {
                subscriber: subscriber.to_owned(),
            })
            .inc();
    }

    fn set_lag(&self, subscriber: &str, lag: u64) {
        self.lag
            .get_or_create(&SubscriberLabels {
                subscriber: subscriber.to_owned(),
            })
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }
}

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    /// A predecessor in the stream has not been applied yet.
    Early,
}

/// One subscriber: a consumer group on the bus, a handler, and the service's database.
pub struct Inbox<H> {
    subscriber: String,
    db: Db,
    bus: Bus,
    spec: ConsumerSpec,
    handler: Arc<H>,
    config: InboxConfig,
    metrics: ConsumerMetrics,
}

impl<H: Handler> Inbox<H> {
    /// `subscriber` names the handler in the inbox tables and is the consumer group on the bus.
    pub fn new(
        db: Db,
        bus: Bus,
        spec: ConsumerSpec,
        handler: H,
        config: InboxConfig,
        metrics: ConsumerMetrics,
    ) -> Self {
        Self {
            subscriber: spec.group.clone(),
            db,
            bus,
            spec,
            handler: Arc::new(handler),
            config,
            metrics,
        }
    }

    /// Consumes until `shutdown`; broker outages are waited out, never fatal.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut consumer = None;
        let mut failures = 0u32;
        let mut lag_reported: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            if consumer.is_none() {
                match self.bus.consumer(&self.spec).await {
                    Ok(c) => consumer = Some(c),
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(subscriber = %self.subscriber, error = %e, "cannot join the consumer group yet");
                        pause(&shutdown, self.config.backoff(failures)).await;
                        continue;
                    }
                }
            }
            let Some(c) = consumer.as_mut() else { continue };
            let wait = Duration::from_millis(self.config.fetch_wait_ms);
            let fetched = tokio::select! {
                () = shutdown.cancelled() => break,
                fetched = c.fetch(self.config.batch_size, wait) => fetched,
            };
            match fetched {
                Ok(batch) => {
                    failures = 0;
                    for delivery in batch {
                        if shutdown.is_cancelled() {
                            // Stopping: another member takes the rest now, not after the ack wait.
                            if let Err(e) = delivery.nak(Duration::ZERO).await {
                                tracing::warn!(subscriber = %self.subscriber, error = %e, "cannot give back a delivery");
                            }
                            continue;
                        }
                        self.process(delivery).await;
                    }
                    // Lag costs a round trip to the broker: at most once a second.
                    if lag_reported.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        lag_reported = Some(tokio::time::Instant::now());
                        self.report_lag(c).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(subscriber = %self.subscriber, error = %e, "fetch failed; retrying");
                    // Join the group again after repeated failures: a broker that lost its state
                    // (restarted with an empty store) no longer knows the durable consumer.
                    if !e.is_transient() || failures.is_multiple_of(3) {
                        consumer = None;
                    }
                    pause(&shutdown, self.config.backoff(failures)).await;
                }
            }
        }
    }

    async fn report_lag(&self, consumer: &Consumer) {
        if let Ok(lag) = consumer.lag().await {
            self.metrics.set_lag(&self.subscriber, lag);
        }
    }

    /// Handles one delivery and settles it with the bus.
    pub async fn process(&self, delivery: Delivery) {
        let attempt = delivery.attempt;
        let settled = match self.apply(&delivery.envelope, attempt).await {
            Ok(Outcome::Applied) => {
                self.metrics.outcome(&self.subscriber, "applied");
                delivery.ack().await
            }
            Ok(Outcome::Duplicate) => {
                self.metrics.outcome(&self.subscriber, "duplicate");
                delivery.ack().await
            }
            Ok(Outcome::Early) => {
                delivery
                    .nak(Duration::from_millis(self.config.reorder_delay_ms))
                    .await
            }
            Err(error) => {
                self.metrics.error(&self.subscriber);
                let permanent = matches!(error, HandlerError::Permanent(_));
                if permanent || attempt >= self.config.max_attempts {
                    tracing::error!(subscriber = %self.subscriber, event_id = %delivery.envelope.id,
                        event_type = %delivery.envelope.event_type, attempt, %error, "parking message");
                    self.metrics.outcome(&self.subscriber, "parked");
                    if let Err(e) = self.skip(&delivery.envelope).await {
                        tracing::warn!(subscriber = %self.subscriber, error = %e, "cannot move the stream past a parked message");
                    }
                    delivery.park(&error.to_string()).await
                } else {
                    tracing::warn!(subscriber = %self.subscriber, event_id = %delivery.envelope.id, attempt, %error, "handler failed; will retry");
                    delivery.nak(self.config.backoff(attempt)).await
                }
            }
        };
        if let Err(e) = settled {
            // The bus will deliver it again; the inbox makes that harmless.
            tracing::warn!(subscriber = %self.subscriber, error = %e, "cannot settle a delivery");
        }
    }

    /// One transaction: dedup, order check, handler, record.
    ///
    /// # Errors
    /// The handler's error, or the database's as a [`HandlerError`].
    pub async fn apply(&self, envelope: &Envelope, attempt: u32) -> Result<Outcome, HandlerError> {
        let mut tx = self.db.begin().await?;
        if is_processed(&mut tx, &self.subscriber, &envelope.id).await? {
            return Ok(Outcome::Duplicate);
        }
        let last = last_seq(&mut tx, &self.subscriber, &envelope.stream_id).await?;
        if envelope.stream_seq > last + 1 && envelope.stream_seq > 0 {
            if attempt <= self.config.max_reorder_waits {
                return Ok(Outcome::Early);
            }
            tracing::warn!(subscriber = %self.subscriber, stream = %envelope.stream_id, expected = last + 1,
                got = envelope.stream_seq, "a predecessor never came; applying out of order");
        }
        self.handler.handle(envelope, &mut tx).await?;
        match record(&mut tx, &self.subscriber, envelope).await {
            // Another member applied the same delivery concurrently and committed first: this
            // transaction's effects roll back with it.
            Err(e) if e.is_conflict() => return Ok(Outcome::Duplicate),
            other => other?,
        }
        tx.commit().await.map_err(StorageError::from)?;
        self.handler.committed();
        Ok(Outcome::Applied)
    }

    /// Moves the stream past a parked event so its successors are not held back forever.
    async fn skip(&self, envelope: &Envelope) -> Result<(), StorageError> {
        let mut tx = self.db.begin().await?;
        advance(
            &mut tx,
            &self.subscriber,
            &envelope.stream_id,
            envelope.stream_seq,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn pause(shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

async fn is_processed(tx: &mut Tx, subscriber: &str, event_id: &str) -> Result<bool, StorageError> {
    let row = sqlx::query("SELECT 1 AS seen FROM inbox_processed WHERE subscriber = $1 AND event_id = $2")
        .bind(subscriber)
        .bind(event_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

async fn last_seq(tx: &mut Tx, subscriber: &str, stream_id: &str) -> Result<i64, StorageError> {
    let row = sqlx::query("SELECT last_seq FROM inbox_streams WHERE subscriber = $1 AND stream_id = $2")
        .bind(subscriber)
        .bind(stream_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map_or(0, |r| r.get::<i64, _>("last_seq")))
}

async fn advance(tx: &mut Tx, subscriber: &str, stream_id: &str, seq: i64) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO inbox_streams (subscriber, stream_id, last_seq) VALUES ($1, $2, $3)
         ON CONFLICT (subscriber, stream_id) DO UPDATE SET last_seq = $3
         WHERE inbox_streams.last_seq < $3",
    )
    .bind(subscriber)
    .bind(stream_id)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn record(tx: &mut Tx, subscriber: &str, envelope: &Envelope) -> Result<(), StorageError> {
    sqlx::query("INSERT INTO inbox_processed (subscriber, event_id, processed_at) VALUES ($1, $2, $3)")
        .bind(subscriber)
        .bind(&envelope.id)
        .bind(now_millis())
        .execute(&mut **tx)
        .await?;
    advance(tx, subscriber, &envelope.stream_id, envelope.stream_seq).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_steps_through_the_list_and_repeats_the_last() {
        let config = InboxConfig {
            backoff_ms: vec![10, 20],
            ..InboxConfig::default()
        };
        assert_eq!(config.backoff(1), Duration::from_millis(10));
        assert_eq!(config.backoff(2), Duration::from_millis(20));
        assert_eq!(config.backoff(9), Duration::from_millis(20));
    }
}
