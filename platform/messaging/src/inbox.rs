//! The inbox: an idempotent consumer.
//!
//! For each fetched batch, one transaction on the service's own database, with a savepoint per
//! delivery that runs the handler. What the subscriber recorded of the batch (its streams'
//! positions, and which of its events were handled before: those are skipped) is read with one
//! statement first, and the applied events' records and the moved positions are written at the
//! end. A delivery that fails rolls back to its savepoint alone and is retried or parked; the
//! others commit together, once, and are acknowledged to the bus together. A redelivery
//! therefore changes nothing, and a crash at any point leaves either everything or nothing. Two
//! members that applied the same event at once (a redelivery while the first still ran) both
//! write its record: the second's key conflict rolls its whole batch back, which is retried and
//! finds the event handled.
//!
//! Order: every envelope carries its position in its stream, and the latest earlier position of
//! each event type in it. An event that arrives before its predecessor (a redelivery overtook it)
//! is put back for a moment, so a stream's events are applied in order whatever order the bus
//! delivers them in. A handler of some types waits only for the latest earlier event of those
//! types, the only ones its group receives. A handler error is retried with
//! backoff; after `max_attempts`, or at once for a permanent error, the message is parked in the
//! dead-letter store with its error, the stream moves past it, and the consumer goes on.
//!
//! Workers: with `workers` above 1 one task fetches and hands each delivery to the worker its
//! stream hashes to; every worker applies its batches as above, in transactions of its own. A
//! stream is thus never in two transactions of this process at once and its events reach the
//! handler in the order fetched; what a handler keeps for `committed` is per worker
//! ([`Handler::for_worker`]). On SQLite the service's one writer still commits one transaction
//! at a time; the workers overlap the bus's fetches and acknowledgements with it.
//!
//! Retention: the record that an event was handled is kept for `retention_secs`, which start-up
//! refuses unless it outlasts every redelivery, and then pruned; the per-stream positions stay.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use mercato_runtime::resilience::register_metrics;
use mercato_runtime::settings::InvalidSetting;
use mercato_storage::span;
use mercato_storage::sqlx::{self, Executor as _};
use mercato_storage::{Db, Migration, StorageError, Tx, now_millis};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bus::{Acker, Bus, Consumer, ConsumerSpec, Delivery};
use crate::envelope::Envelope;

/// The inbox tables; a consuming service lists this among its migrations.
pub const MIGRATION: Migration = Migration::new(1002, "inbox", include_str!("../migrations/inbox.sql"));

/// The index that makes pruning old dedup records cheap; listed beside [`MIGRATION`].
pub const RETENTION_MIGRATION: Migration = Migration::new(
    1004,
    "inbox_retention",
    include_str!("../migrations/inbox_retention.sql"),
);

/// How often a running inbox prunes its dedup records.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

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

    /// Called after a transaction with handled events committed (to wake a relay or a
    /// projection), once per transaction: the inbox applies a fetched batch in one.
    fn committed(&self) {}

    /// Called once for each `handle` whose effects were undone (it failed, its savepoint rolled
    /// back, or its batch's transaction failed), the latest first: what the handler kept for
    /// `committed` about that event is void.
    fn rolled_back(&self) {}

    /// The event types this handler applies; empty (the default) for all. The consumer group is
    /// given only these, so events it would ignore cost it nothing.
    fn event_types(&self) -> &[&'static str] {
        &[]
    }

    /// The handler for one more parallel worker of the group (`inbox.workers` above 1): it
    /// shares what this one shares (metrics, wakers) and has its own state for `committed` and
    /// `rolled_back`, since each worker runs its own transactions. `None` (the default) for a
    /// handler that keeps no per-transaction state: the workers then share this one.
    fn for_worker(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
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
    /// Workers applying the group's deliveries at once in this process, each in its own
    /// transactions; a stream always goes to the same worker, so its order holds.
    pub workers: usize,
    /// How long the record that an event was handled is kept: a redelivery within it is
    /// recognised and skipped. Must outlast any redelivery (see
    /// [`InboxConfig::retention_outlasts_redelivery`]).
    pub retention_secs: u64,
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
            workers: 1,
            retention_secs: 24 * 3600,
        }
    }
}

impl InboxConfig {
    /// The longest a message can come again after it was first delivered: the bus's ack wait
    /// (a delivery whose ack was lost), every retry's backoff, and every reorder wait. A dedup
    /// record must be kept longer than this.
    #[must_use]
    pub fn redelivery_horizon_ms(&self, ack_wait_ms: u64) -> u64 {
        let retries = (1..=self.max_attempts).fold(0u64, |sum, attempt| {
            sum.saturating_add(u64::try_from(self.backoff(attempt).as_millis()).unwrap_or(u64::MAX))
        });
        let reorders = u64::from(self.max_reorder_waits).saturating_mul(self.reorder_delay_ms);
        ack_wait_ms
            .saturating_mul(u64::from(self.max_attempts))
            .saturating_add(retries)
            .saturating_add(reorders)
    }

    /// Refuses a `retention_secs` a redelivery could outlast (which would then be applied twice).
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `retention_secs`.
    pub fn retention_outlasts_redelivery(&self, ack_wait_ms: u64) -> Result<(), InvalidSetting> {
        let horizon = self.redelivery_horizon_ms(ack_wait_ms);
        if self.retention_secs.saturating_mul(1_000) > horizon {
            return Ok(());
        }
        Err(InvalidSetting::new(
            "retention_secs",
            format!(
                "must be longer than the longest redelivery ({horizon} ms: the ack wait and backoff of every attempt and every reorder wait)"
            ),
        ))
    }

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

/// Per-consumer metrics: outcomes, handler errors, lag, and the size of each fetched batch.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
    errors: Family<SubscriberLabels, Counter>,
    lag: Family<SubscriberLabels, Gauge>,
    batches: Family<SubscriberLabels, Histogram, fn() -> Histogram>,
}

impl ConsumerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            outcomes: Family::default(),
            errors: Family::default(),
            lag: Family::default(),
            batches: Family::new_with_constructor(crate::relay::batch_histogram),
        };
        register_metrics!(registry, {
            metrics.outcomes => "mercato_consumer_messages", "Messages a consumer finished, by outcome (applied, duplicate, ignored, parked)";
            metrics.errors => "mercato_consumer_handler_errors", "Handler failures";
            metrics.lag => "mercato_consumer_lag", "Messages of the category not yet acknowledged";
            metrics.batches => "mercato_consumer_batch_messages", "Messages a consumer applied in one transaction (a fetched batch, or a worker's part)";
        });
        metrics
    }

    fn batch(&self, subscriber: &str, size: usize) {
        #[allow(clippy::cast_precision_loss)]
        self.batches
            .get_or_create(&SubscriberLabels {
                subscriber: subscriber.to_owned(),
            })
            .observe(size as f64);
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
    /// A type the handler does not take.
    Ignored,
}

/// One subscriber: a consumer group on the bus, a handler, and the service's database.
pub struct Inbox<H> {
    subscriber: String,
    /// The consuming service, for its spans: subscribers are named `<service>-on-<category>`.
    service: String,
    db: Db,
    bus: Bus,
    spec: ConsumerSpec,
    handler: Arc<H>,
    config: InboxConfig,
    metrics: ConsumerMetrics,
}

impl<H: Handler> Inbox<H> {
    /// `subscriber` names the handler in the inbox tables and is the consumer group on the bus.
    /// The group's event types are the handler's ([`Handler::event_types`]).
    pub fn new(
        db: Db,
        bus: Bus,
        mut spec: ConsumerSpec,
        handler: H,
        config: InboxConfig,
        metrics: ConsumerMetrics,
    ) -> Self {
        spec.event_types = handler.event_types().iter().map(|&t| t.to_owned()).collect();
        Self {
            subscriber: spec.group.clone(),
            service: spec.group.split("-on-").next().unwrap_or_default().to_owned(),
            db,
            bus,
            spec,
            handler: Arc::new(handler),
            config,
            metrics,
        }
    }

    /// Consumes until `shutdown`; broker outages are waited out, never fatal.
    ///
    /// With `workers` above 1 this task only fetches: each fetched delivery goes to the worker
    /// its stream hashes to, so a stream's events are applied by one worker, in the order they
    /// were fetched, never in two transactions at once, while other streams' go on beside them.
    pub async fn run(self, shutdown: CancellationToken) {
        let workers = self.config.workers.max(1);
        let mut queues = Vec::new();
        let mut running = tokio::task::JoinSet::new();
        if workers > 1 {
            for _ in 0..workers {
                // One batch queued per worker: a slow worker holds the fetching back, so what is
                // fetched is worked on soon (its claims are renewed meanwhile).
                let (queue, batches) = tokio::sync::mpsc::channel(1);
                running.spawn(self.worker().work(batches, shutdown.clone()));
                queues.push(queue);
            }
        }
        self.consume(&queues, &shutdown).await;
        // The workers finish what they hold (handing back what they have not begun) and stop.
        drop(queues);
        while running.join_next().await.is_some() {}
    }

    /// Another worker of this inbox: the handler's own [`Handler::for_worker`], or the same.
    fn worker(&self) -> Self {
        Self {
            subscriber: self.subscriber.clone(),
            service: self.service.clone(),
            db: self.db.clone(),
            bus: self.bus.clone(),
            spec: self.spec.clone(),
            handler: self
                .handler
                .for_worker()
                .map_or_else(|| Arc::clone(&self.handler), Arc::new),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
        }
    }

    async fn work(self, mut batches: Queue, stop: CancellationToken) {
        while let Some((acker, batch)) = batches.recv().await {
            self.process(&acker, batch, &stop).await;
        }
    }

    /// The fetching loop: applies each batch here, or hands its streams to `queues`.
    async fn consume(
        &self,
        queues: &[tokio::sync::mpsc::Sender<(Acker, Vec<Delivery>)>],
        shutdown: &CancellationToken,
    ) {
        let mut consumer = None;
        let mut failures = 0u32;
        let mut lag_reported: Option<tokio::time::Instant> = None;
        let mut pruned = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = tokio::time::Instant::now();
                if let Err(error) = self.prune(Duration::from_secs(self.config.retention_secs)).await {
                    tracing::warn!(subscriber = %self.subscriber, %error, "cannot prune the inbox's dedup records");
                }
            }
            if consumer.is_none() {
                match self.bus.consumer(&self.spec).await {
                    Ok(c) => consumer = Some(c),
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(subscriber = %self.subscriber, error = %e, "cannot join the consumer group yet");
                        pause(shutdown, self.config.backoff(failures)).await;
                        continue;
                    }
                }
            }
            let Some(c) = consumer.as_mut() else { continue };
            let wait = Duration::from_millis(self.config.fetch_wait_ms);
            let fetched = tokio::select! {
                () = shutdown.cancelled() => break,
                fetched = c.fetch(self.config.batch_size.saturating_mul(queues.len().max(1)), wait) => fetched,
            };
            match fetched {
                Ok(batch) => {
                    failures = 0;
                    let acker = c.acker();
                    if queues.is_empty() {
                        self.process(&acker, batch, shutdown).await;
                    } else {
                        for (worker, part) in by_stream(batch, queues.len()).into_iter().enumerate() {
                            if !part.is_empty() && queues[worker].send((acker.clone(), part)).await.is_err() {
                                // Only a worker that panicked is gone; its deliveries come again.
                                tracing::error!(subscriber = %self.subscriber, worker, "an inbox worker stopped");
                            }
                        }
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
                    pause(shutdown, self.config.backoff(failures)).await;
                }
            }
        }
    }

    /// Deletes this subscriber's dedup records older than `window`, a batch per transaction.
    /// Returns how many went. The per-stream positions stay: they are one row per stream.
    ///
    /// # Errors
    /// The database failed; what was deleted before stays deleted.
    pub async fn prune(&self, window: Duration) -> Result<u64, StorageError> {
        let cutoff = now_millis().saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        crate::retention::delete_in_batches(
            &self.db,
            "DELETE FROM inbox_processed WHERE subscriber = $1 AND event_id IN (
               SELECT event_id FROM inbox_processed WHERE subscriber = $2 AND processed_at < $3 LIMIT $4)",
            &[&self.subscriber, &self.subscriber],
            cutoff,
        )
        .await
    }

    async fn report_lag(&self, consumer: &Consumer) {
        if let Ok(lag) = consumer.lag().await {
            self.metrics.set_lag(&self.subscriber, lag);
        }
    }

    /// Applies a fetched batch in one transaction and settles every delivery with the bus: the
    /// applied and the duplicates with one batch acknowledgement, the rest one by one.
    async fn process(&self, consumer: &Acker, deliveries: Vec<Delivery>, stop: &CancellationToken) {
        if deliveries.is_empty() {
            return;
        }
        self.metrics.batch(&self.subscriber, deliveries.len());
        let batch: Vec<_> = deliveries.iter().map(|d| (&d.envelope, d.attempt)).collect();
        let outcomes = match self.apply_batch(&batch, stop).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                // Nothing committed; no attempt is spent on parking, since a park could not have
                // moved the stream past the message.
                self.metrics.error(&self.subscriber);
                tracing::warn!(subscriber = %self.subscriber, %error, batch = deliveries.len(), "batch failed; will retry");
                for delivery in deliveries {
                    let delay = self.config.backoff(delivery.attempt);
                    self.settled(delivery.nak(delay).await);
                }
                return;
            }
        };
        let mut done = Vec::with_capacity(deliveries.len());
        let mut deliveries = deliveries.into_iter();
        // Outcomes first: the zip then stops without taking a delivery the batch did not reach.
        for (outcome, delivery) in outcomes.into_iter().zip(deliveries.by_ref()) {
            match outcome {
                Ok(Outcome::Applied) => {
                    self.metrics.outcome(&self.subscriber, "applied");
                    done.push(delivery);
                }
                Ok(Outcome::Duplicate) => {
                    self.metrics.outcome(&self.subscriber, "duplicate");
                    done.push(delivery);
                }
                Ok(Outcome::Ignored) => {
                    self.metrics.outcome(&self.subscriber, "ignored");
                    done.push(delivery);
                }
                Ok(Outcome::Early) => {
                    let delay = Duration::from_millis(self.config.reorder_delay_ms);
                    self.settled(delivery.nak(delay).await);
                }
                Err(error) => {
                    self.metrics.error(&self.subscriber);
                    let attempt = delivery.attempt;
                    if self.parks(&error, attempt) {
                        tracing::error!(subscriber = %self.subscriber, event_id = %delivery.envelope.id,
                            event_type = %delivery.envelope.event_type, attempt, %error, "parking message");
                        self.metrics.outcome(&self.subscriber, "parked");
                        self.settled(delivery.park(&error.to_string()).await);
                    } else {
                        tracing::warn!(subscriber = %self.subscriber, event_id = %delivery.envelope.id, attempt, %error, "handler failed; will retry");
                        self.settled(delivery.nak(self.config.backoff(attempt)).await);
                    }
                }
            }
        }
        self.settled(consumer.ack_all(done).await);
        // Stopping: what the batch did not reach goes to another member now, not after the ack
        // wait.
        for delivery in deliveries {
            self.settled(delivery.nak(Duration::ZERO).await);
        }
    }

    fn settled(&self, settled: Result<(), crate::BusError>) {
        if let Err(e) = settled {
            // The bus will deliver it again; the inbox makes that harmless.
            tracing::warn!(subscriber = %self.subscriber, error = %e, "cannot settle a delivery");
        }
    }

    /// Whether a failed delivery is parked rather than retried.
    fn parks(&self, error: &HandlerError, attempt: u32) -> bool {
        matches!(error, HandlerError::Permanent(_)) || attempt >= self.config.max_attempts
    }

    /// One transaction for the batch, one savepoint per delivery. A delivery about to be parked
    /// moves its stream past itself in the same transaction, so its successors are not held back.
    ///
    /// # Errors
    /// The transaction itself failed (begin, a savepoint, commit): nothing of the batch applied.
    /// Once `stop` is cancelled no further delivery is started: the outcomes then cover only the
    /// batch's first deliveries, and the rest is for another member.
    async fn apply_batch(
        &self,
        deliveries: &[(&Envelope, u32)],
        stop: &CancellationToken,
    ) -> Result<Vec<Result<Outcome, HandlerError>>, StorageError> {
        if !deliveries.iter().any(|(e, _)| self.spec.handles(&e.event_type)) {
            return Ok(deliveries.iter().map(|_| Ok(Outcome::Ignored)).collect());
        }
        let mut handled = 0;
        let batch = batch_span(&self.service, "inbox batch", deliveries.iter().map(|(e, _)| *e));
        let span = span::database(self.db.backend(), "TRANSACTION", "inbox", &batch);
        let applied = self
            .apply_all(deliveries, stop, &mut handled)
            .instrument(span)
            .await;
        match &applied {
            Ok(_) if handled > 0 => self.handler.committed(),
            Ok(_) => {}
            Err(_) => (0..handled).for_each(|_| self.handler.rolled_back()),
        }
        applied
    }

    /// [`Inbox::apply_batch`]'s transaction; `handled` counts the events applied in it so far.
    ///
    /// The bookkeeping is per batch: one statement reads the positions of the batch's streams
    /// and which of its events were handled before ([`Ledger`]), both then kept in step in memory
    /// as deliveries apply (a later delivery of the same stream sees the earlier one's position,
    /// and a second copy of an event the first's record), and written back at the end. Per
    /// delivery there is one statement to open its savepoint (releasing the one before); a
    /// duplicate is refused before any of the handler's work, without one.
    async fn apply_all(
        &self,
        deliveries: &[(&Envelope, u32)],
        stop: &CancellationToken,
        handled: &mut usize,
    ) -> Result<Vec<Result<Outcome, HandlerError>>, StorageError> {
        let mut tx = self.db.begin().await?;
        let mut ledger = Ledger::load(
            &mut tx,
            &self.subscriber,
            deliveries
                .iter()
                .filter(|(e, _)| self.spec.handles(&e.event_type))
                .map(|(e, _)| *e),
        )
        .await?;
        let mut savepoint_open = false;
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for &(envelope, attempt) in deliveries {
            if stop.is_cancelled() {
                break;
            }
            if !self.spec.handles(&envelope.event_type) {
                // Held by the group from before its types changed.
                outcomes.push(Ok(Outcome::Ignored));
                continue;
            }
            let span = mercato_runtime::trace::consume(
                &self.service,
                &envelope.event_type,
                envelope.traceparent.as_deref(),
            );
            let outcome = self
                .apply_one(&mut tx, &mut savepoint_open, &ledger, envelope, attempt)
                .instrument(span)
                .await?;
            match &outcome {
                Ok(Outcome::Applied) => {
                    *handled += 1;
                    ledger.applied(envelope);
                }
                // A message about to be parked moves its stream past itself in the same
                // transaction, so its successors are not held back.
                Err(error) if self.parks(error, attempt) => {
                    ledger.advance(&envelope.stream_id, envelope.stream_seq);
                }
                _ => {}
            }
            outcomes.push(outcome);
        }
        // The last savepoint needs no release: the commit ends it with the transaction.
        ledger.save(&mut tx, &self.subscriber).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Applies one event in a transaction of its own, as a batch of one.
    ///
    /// # Errors
    /// The handler's error, or the database's as a [`HandlerError`].
    pub async fn apply(&self, envelope: &Envelope, attempt: u32) -> Result<Outcome, HandlerError> {
        let mut outcomes = self
            .apply_batch(&[(envelope, attempt)], &CancellationToken::new())
            .await?;
        outcomes.pop().unwrap_or(Ok(Outcome::Ignored))
    }

    /// Source check, order check, duplicate check, then the handler in the delivery's savepoint.
    /// A delivery whose handler failed has its savepoint rolled back; `savepoint_open` says
    /// whether one is open in `tx`.
    ///
    /// # Errors
    /// A savepoint statement failed: the transaction itself is in doubt, and so is the batch.
    async fn apply_one(
        &self,
        tx: &mut Tx,
        savepoint_open: &mut bool,
        ledger: &Ledger,
        envelope: &Envelope,
        attempt: u32,
    ) -> Result<Result<Outcome, HandlerError>, StorageError> {
        // A category's stream carries only its own service's events, and the bus only lets that
        // service publish there: an envelope naming another source was forged, and is parked.
        if envelope.source != self.spec.category {
            return Ok(Err(HandlerError::Permanent(format!(
                "event {} names {} as its source, which may not produce {} events",
                envelope.id, envelope.source, self.spec.category
            ))));
        }
        let last = ledger.last(&envelope.stream_id);
        let predecessor = envelope.predecessor(&self.spec.event_types);
        if last < predecessor && envelope.stream_seq > 0 {
            if attempt <= self.config.max_reorder_waits {
                return Ok(Ok(Outcome::Early));
            }
            tracing::warn!(subscriber = %self.subscriber, stream = %envelope.stream_id, expected = predecessor,
                got = envelope.stream_seq, "a predecessor never came; applying out of order");
        }
        // Applied before, or earlier in this batch.
        if ledger.recorded(&envelope.id) {
            return Ok(Ok(Outcome::Duplicate));
        }
        let open = if *savepoint_open {
            "RELEASE SAVEPOINT inbox_delivery; SAVEPOINT inbox_delivery"
        } else {
            "SAVEPOINT inbox_delivery"
        };
        savepoint(tx, open).await?;
        *savepoint_open = true;
        match self.handler.handle(envelope, tx).await {
            Ok(()) => Ok(Ok(Outcome::Applied)),
            Err(error) => {
                self.handler.rolled_back();
                savepoint(tx, "ROLLBACK TO SAVEPOINT inbox_delivery").await?;
                Ok(Err(error))
            }
        }
    }
}

/// The span of `service`'s work `name` on a batch of events: it serves many traces, so it is a
/// trace of its own, linked to each event's.
pub(crate) fn batch_span<'a>(
    service: &str,
    name: &str,
    events: impl IntoIterator<Item = &'a Envelope>,
) -> tracing::Span {
    let span = mercato_runtime::trace::resume(service, name, None);
    mercato_runtime::trace::context::link(&span, events.into_iter().filter_map(|e| e.traceparent.as_deref()));
    span
}

/// What the fetching task hands a worker: a batch of its streams and how to acknowledge it.
type Queue = tokio::sync::mpsc::Receiver<(Acker, Vec<Delivery>)>;

/// `deliveries` split into `workers` parts by stream, each in the order fetched.
fn by_stream(deliveries: Vec<Delivery>, workers: usize) -> Vec<Vec<Delivery>> {
    let mut parts: Vec<Vec<Delivery>> = (0..workers).map(|_| Vec::new()).collect();
    for delivery in deliveries {
        parts[worker_of(&delivery.envelope.stream_id, workers)].push(delivery);
    }
    parts
}

/// The worker a stream goes to: the same for the life of the process (SipHash with fixed keys).
fn worker_of(stream_id: &str, workers: usize) -> usize {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    stream_id.hash(&mut hasher);
    usize::try_from(hasher.finish() % workers.max(1) as u64).unwrap_or(0)
}

/// A savepoint statement: plain SQL that SQLite and PostgreSQL both take.
async fn savepoint(tx: &mut Tx, statement: &'static str) -> Result<(), StorageError> {
    (&mut **tx).execute(sqlx::raw_sql(statement)).await?;
    Ok(())
}

async fn pause(shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

/// What one subscriber recorded of a batch: its streams' positions and which of its events were
/// handled before. Read with one statement, kept in step in memory as the batch applies, and
/// written back at the end (positions never move back; each applied event gets its record).
#[derive(Debug, Default)]
struct Ledger {
    last: HashMap<String, i64>,
    moved: HashSet<String>,
    /// Events of the batch handled before it.
    before: HashSet<String>,
    /// Events the batch applied, in order: their records are written with the positions.
    applied: Vec<String>,
}

/// Events per read of a [`Ledger`].
const EVENTS_PER_READ: usize = 200;

impl Ledger {
    async fn load<'a>(
        tx: &mut Tx,
        subscriber: &str,
        events: impl Iterator<Item = &'a Envelope>,
    ) -> Result<Self, StorageError> {
        let events: Vec<&Envelope> = events.collect();
        let mut ledger = Self::default();
        // A statement per chunk of events, each with both of its lists non-empty; a stream in
        // two chunks is read twice, which changes nothing.
        for chunk in events.chunks(EVENTS_PER_READ) {
            let distinct = |key: fn(&Envelope) -> &str| -> Vec<&str> {
                let keys: BTreeSet<&str> = chunk.iter().map(|e| key(e)).collect();
                keys.into_iter().collect()
            };
            let streams = distinct(|e| e.stream_id.as_str());
            let ids = distinct(|e| e.id.as_str());
            // Each list at a width of a few (see `in_list_width`), its last key repeated.
            let widths = [
                mercato_storage::in_list_width(streams.len()),
                mercato_storage::in_list_width(ids.len()),
            ];
            let params = |from: usize, width: usize| -> String {
                (from..from + width)
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let sql = format!(
                "SELECT stream_id AS key, last_seq FROM inbox_streams WHERE subscriber = $1 AND stream_id IN ({})
                 UNION ALL
                 SELECT event_id AS key, -1 AS last_seq FROM inbox_processed WHERE subscriber = $2 AND event_id IN ({})",
                params(3, widths[0]),
                params(3 + widths[0], widths[1])
            );
            let mut query = sqlx::query_as::<_, (String, i64)>(&sql)
                .bind(subscriber)
                .bind(subscriber);
            for (keys, width) in [(&streams, widths[0]), (&ids, widths[1])] {
                for i in 0..width {
                    query = query.bind(keys[i.min(keys.len() - 1)]);
                }
            }
            for (key, last_seq) in query.fetch_all(&mut **tx).await? {
                // Positions start at 1: a record comes back as -1.
                if last_seq < 0 {
                    ledger.before.insert(key);
                } else {
                    ledger.last.insert(key, last_seq);
                }
            }
        }
        Ok(ledger)
    }

    /// The last position of `stream` applied or passed (0 before any).
    fn last(&self, stream: &str) -> i64 {
        self.last.get(stream).copied().unwrap_or(0)
    }

    /// Whether the event `id` was handled, before this batch or in it.
    fn recorded(&self, id: &str) -> bool {
        self.before.contains(id) || self.applied.iter().any(|applied| applied == id)
    }

    fn advance(&mut self, stream: &str, seq: i64) {
        let last = self.last.entry(stream.to_owned()).or_insert(0);
        if seq > *last {
            *last = seq;
            self.moved.insert(stream.to_owned());
        }
    }

    /// `envelope` was applied: its stream moves past it, and it gets its record.
    fn applied(&mut self, envelope: &Envelope) {
        self.advance(&envelope.stream_id, envelope.stream_seq);
        self.applied.push(envelope.id.clone());
    }

    /// Writes the positions that moved and the applied events' records. A record that another
    /// member wrote meanwhile is a conflict: the batch then rolls back whole and is retried.
    async fn save(&self, tx: &mut Tx, subscriber: &str) -> Result<(), StorageError> {
        let moved: Vec<([&str; 2], i64)> = self
            .moved
            .iter()
            .map(|stream| ([subscriber, stream.as_str()], self.last(stream)))
            .collect();
        crate::latest::store(
            tx,
            "inbox_streams",
            ["subscriber", "stream_id"],
            "last_seq",
            &moved,
        )
        .await?;
        let now = now_millis();
        for chunk in self.applied.chunks(RECORDS_PER_STATEMENT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, $2, ${})", i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO inbox_processed (subscriber, processed_at, event_id) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(subscriber).bind(now);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Records per insert statement.
const RECORDS_PER_STATEMENT: usize = 100;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

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

    #[test]
    fn a_stream_always_goes_to_the_same_worker_and_streams_spread() {
        let streams: Vec<String> = (0..64).map(|i| format!("order-{i}")).collect();
        let workers: HashSet<usize> = streams.iter().map(|s| worker_of(s, 4)).collect();
        assert_eq!(workers.len(), 4, "64 streams reach every one of 4 workers");
        for stream in &streams {
            assert_eq!(worker_of(stream, 4), worker_of(&stream.clone(), 4));
            assert_eq!(worker_of(stream, 1), 0);
        }
    }
}
