//! The outbox relay: publishes unsent outbox rows in position order and marks them sent.
//!
//! It stops a pass at the first failed publish, so a stream's events never go out of order, and
//! marks rows only after the bus acknowledged them, so a crash in between republishes (the bus
//! dedups by event id, the inbox by event id) and never loses. Published rows are kept for
//! `relay.retention_secs` for inspection, then deleted in batches (by the index of
//! [`RETENTION_MIGRATION`]).

use std::time::Duration;

use mercato_runtime::resilience::register_metrics;
use mercato_storage::span;
use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Db, Migration, StorageError, now_millis};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::bus::{Bus, BusError};
use crate::envelope::Envelope;
use crate::outbox::Outbox;
use crate::preceding::{self, Known};

/// The index that makes pruning published outbox rows cheap; a service with an outbox lists
/// this too.
pub const RETENTION_MIGRATION: Migration = Migration::new(
    1005,
    "outbox_retention",
    include_str!("../migrations/outbox_retention.sql"),
);

/// The longest a busy relay goes without counting its backlog for the gauges.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// How often a running relay prunes published rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The relay's record of each stream's event types; a service with an outbox lists this too.
pub const MIGRATION: Migration = Migration::new(
    1003,
    "relay_stream_types",
    include_str!("../migrations/relay_stream_types.sql"),
);

/// Relay settings (`[relay]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    pub batch_size: usize,
    /// Fallback poll when no commit woke the relay (another process wrote, or a wake was missed).
    pub poll_interval_ms: u64,
    /// Wait after a failed publish before trying again.
    pub retry_delay_ms: u64,
    /// How long published rows are kept; unpublished rows are never deleted.
    pub retention_secs: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval_ms: 500,
            retry_delay_ms: 1_000,
            retention_secs: 24 * 3600,
        }
    }
}

/// Why a relay pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("outbox row {position} is not a valid envelope: {reason}")]
    Corrupt { position: i64, reason: String },
}

/// Upper bounds of batch-size histograms (events in a relay pass, messages in an inbox batch).
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

pub(crate) fn batch_histogram() -> Histogram {
    Histogram::new(BATCH_BUCKETS)
}

/// Outbox metrics: backlog, age of the oldest unsent event, published and failed counts, and
/// the size of each pass's batch.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    backlog: Gauge,
    oldest_age_ms: Gauge,
    published: Counter,
    failures: Counter,
    batch: Histogram,
}

impl RelayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            backlog: Gauge::default(),
            oldest_age_ms: Gauge::default(),
            published: Counter::default(),
            failures: Counter::default(),
            batch: batch_histogram(),
        };
        register_metrics!(registry, {
            metrics.backlog => "mercato_outbox_backlog", "Outbox events not yet published";
            metrics.oldest_age_ms => "mercato_outbox_oldest_unsent_age_milliseconds", "Age of the oldest unpublished outbox event";
            metrics.published => "mercato_outbox_published", "Outbox events published";
            metrics.failures => "mercato_outbox_publish_failures", "Failed publish attempts";
            metrics.batch => "mercato_outbox_publish_batch_events", "Events a relay pass published as one bus batch";
        });
        metrics
    }
}

/// Publishes one service's outbox.
#[derive(Debug, Clone)]
pub struct Relay {
    db: Db,
    bus: Bus,
    outbox: Outbox,
    config: RelayConfig,
    metrics: RelayMetrics,
}

impl Relay {
    #[must_use]
    pub fn new(db: Db, bus: Bus, outbox: Outbox, config: RelayConfig, metrics: RelayMetrics) -> Self {
        Self {
            db,
            bus,
            outbox,
            config,
            metrics,
        }
    }

    /// Publishes until `shutdown`, woken by commits or the poll interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut last_cleanup = tokio::time::Instant::now();
        let mut gauges_at: Option<tokio::time::Instant> = None;
        loop {
            let published = match self.publish_pending().await {
                Ok(n) => n,
                Err(e) => {
                    self.metrics.failures.inc();
                    // The backlog growing during an outage is what operators need to see.
                    let _ = self.update_gauges().await;
                    tracing::warn!(error = %e, "outbox relay pass failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(self.config.retry_delay_ms)) => {}
                    }
                    continue;
                }
            };
            let drained = published < self.config.batch_size;
            // Counting the backlog is a query of its own: under load at most once a second, and
            // on every idle pass, so the gauges settle as soon as the outbox is drained.
            if published == 0 || gauges_at.is_none_or(|at| at.elapsed() >= GAUGES_EVERY) {
                gauges_at = Some(tokio::time::Instant::now());
                let _ = self.update_gauges().await;
            }
            if last_cleanup.elapsed() >= PRUNE_EVERY {
                last_cleanup = tokio::time::Instant::now();
                if let Err(e) = self.prune(Duration::from_secs(self.config.retention_secs)).await {
                    tracing::warn!(error = %e, "cannot delete old outbox rows");
                }
            }
            if drained {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.outbox.woken() => {}
                    () = tokio::time::sleep(poll) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// One pass: publishes up to a batch of unsent rows in order as one bus batch, each envelope
    /// with what came before it in its stream, and marks the acknowledged prefix in one
    /// statement. Returns how many were published.
    ///
    /// # Errors
    /// The database or the bus failed; rows published before the failure are marked.
    pub async fn publish_pending(&self) -> Result<usize, RelayError> {
        let rows = sqlx::query(
            "SELECT position, envelope FROM outbox WHERE published_at IS NULL ORDER BY position LIMIT $1",
        )
        .bind(i64::try_from(self.config.batch_size).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await
        .map_err(StorageError::from)?;
        let mut positions = Vec::with_capacity(rows.len());
        let mut envelopes = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in rows {
            let position: i64 = row.get("position");
            let body: String = row.get("envelope");
            match serde_json::from_str::<Envelope>(&body) {
                Ok(envelope) => {
                    positions.push(position);
                    envelopes.push(envelope);
                }
                Err(e) => {
                    failure = Some(RelayError::Corrupt {
                        position,
                        reason: e.to_string(),
                    });
                    break;
                }
            }
        }
        Known::load(&self.db, &envelopes).await?.fill(&mut envelopes);
        if !envelopes.is_empty() {
            #[allow(clippy::cast_precision_loss)]
            self.metrics.batch.observe(envelopes.len() as f64);
        }
        if let Err(partial) = self.bus.publish_batch(&envelopes).await {
            positions.truncate(partial.acknowledged);
            envelopes.truncate(partial.acknowledged);
            failure = Some(partial.error.into());
        }
        self.mark(&positions, &envelopes).await?;
        self.metrics.published.inc_by(positions.len() as u64);
        match failure {
            Some(e) => Err(e),
            None => Ok(positions.len()),
        }
    }

    /// Marks the published rows and remembers their streams' types, in one transaction, under
    /// a span of the pass linked to each event's trace.
    async fn mark(&self, positions: &[i64], published: &[Envelope]) -> Result<(), StorageError> {
        if positions.is_empty() {
            return Ok(());
        }
        let source = published.first().map_or("", |e| e.source.as_str());
        let pass = crate::inbox::batch_span(source, "outbox relay", published);
        let span = span::database(self.db.backend(), "UPDATE", "outbox", &pass);
        self.mark_now(positions, published).instrument(span).await
    }

    async fn mark_now(&self, positions: &[i64], published: &[Envelope]) -> Result<(), StorageError> {
        // An explicit list, not a range: on PostgreSQL a row with a lower position can commit
        // after this pass read the batch, and a range would mark it sent unsent.
        let width = mercato_storage::in_list_width(positions.len());
        let placeholders: Vec<String> = (2..width + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "UPDATE outbox SET published_at = $1 WHERE position IN ({}) AND published_at IS NULL",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(now_millis());
        for i in 0..width {
            query = query.bind(positions[i.min(positions.len().saturating_sub(1))]);
        }
        let mut tx = self.db.begin().await?;
        query.execute(&mut *tx).await?;
        preceding::remember(&mut tx, published).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Unsent rows and the age of the oldest, in milliseconds.
    ///
    /// # Errors
    /// The database failed.
    pub async fn backlog(&self) -> Result<(i64, i64), StorageError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS backlog, MIN(created_at) AS oldest FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(self.db.pool())
        .await?;
        let backlog: i64 = row.get("backlog");
        let oldest: Option<i64> = row.get("oldest");
        Ok((backlog, oldest.map_or(0, |o| (now_millis() - o).max(0))))
    }

    async fn update_gauges(&self) -> Result<(), StorageError> {
        let (backlog, age) = self.backlog().await?;
        self.metrics.backlog.set(backlog);
        self.metrics.oldest_age_ms.set(age);
        Ok(())
    }

    /// Deletes rows published more than `window` ago, a batch per transaction; unpublished rows
    /// stay whatever their age. Returns how many went.
    ///
    /// # Errors
    /// The database failed; what was deleted before stays deleted.
    pub async fn prune(&self, window: Duration) -> Result<u64, StorageError> {
        let cutoff = now_millis().saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        crate::retention::delete_in_batches(
            &self.db,
            "DELETE FROM outbox WHERE position IN (
               SELECT position FROM outbox WHERE published_at IS NOT NULL AND published_at < $1 LIMIT $2)",
            &[],
            cutoff,
        )
        .await
    }
}
