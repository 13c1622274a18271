//! The expiry sweeper: gives back the stock of held reservations whose time has run out, one
//! reservation per transaction, each with its `StockReleased { cause: "expired" }`.
//!
//! Every replica may run it: a reservation is expired by a conditional update on its state, so
//! of two sweepers (or a sweeper and a command) only one changes it.

use std::time::Duration;

use mercato_contracts::inventory::StockReleased;
use mercato_messaging::{Context, HandlerError, Outbox};
use mercato_runtime::CancellationToken;
use mercato_storage::{Db, StorageError, now_millis};

use crate::events::{CAUSE_EXPIRED, publish};
use crate::metrics::{Outcome, ReservationMetrics};
use crate::reservations;
use crate::store::reservations as store;

/// Reservations looked at per query.
const BATCH: usize = 100;

/// Why a sweep stopped early; the next one carries on.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot publish the release: {0}")]
    Publish(#[from] HandlerError),
}

/// Expires due reservations every `period`.
#[derive(Debug, Clone)]
pub struct Sweeper {
    db: Db,
    outbox: Outbox,
    period: Duration,
    metrics: ReservationMetrics,
}

impl Sweeper {
    #[must_use]
    pub fn new(db: Db, outbox: Outbox, period: Duration, metrics: ReservationMetrics) -> Self {
        Self {
            db,
            outbox,
            period,
            metrics,
        }
    }

    /// Sweeps every period until `shutdown`; failures are logged and retried on the next tick.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired reservations released"),
                Err(e) => tracing::warn!(error = %e, "reservation sweep failed; retrying next period"),
            }
        }
    }

    /// Expires every reservation due now; returns how many this call expired.
    ///
    /// # Errors
    /// The database failed; what was expired before stays expired.
    pub async fn sweep(&self) -> Result<usize, SweepError> {
        let now = now_millis();
        let mut expired = 0;
        loop {
            let due = store::due(self.db.pool(), now, BATCH).await?;
            for order_id in &due {
                if self.expire(order_id, now).await? {
                    expired += 1;
                }
            }
            if due.len() < BATCH {
                return Ok(expired);
            }
        }
    }

    async fn expire(&self, order_id: &str, now: i64) -> Result<bool, SweepError> {
        let mut tx = self.db.begin().await?;
        let Some(reservation) = store::find(&mut tx, order_id).await? else {
            return Ok(false);
        };
        if !reservations::expire(&mut tx, order_id, now).await? {
            return Ok(false);
        }
        let context = Context {
            correlation_id: reservation.correlation_id,
            causation_id: None,
            traceparent: reservation.traceparent,
        };
        let event = StockReleased {
            order_id: order_id.to_owned(),
            cause: CAUSE_EXPIRED.to_owned(),
        };
        publish(&mut tx, order_id, &event, &context).await?;
        tx.commit().await?;
        self.outbox.committed();
        self.metrics.record(Outcome::Expired);
        tracing::info!(order_id, "reservation expired");
        Ok(true)
    }
}
