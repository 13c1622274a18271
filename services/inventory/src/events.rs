//! Inventory on the bus: the handler for the checkout saga's stock commands (category
//! `orders`), and the answers it publishes through the outbox in the inbox's transaction.

use std::sync::Mutex;

use mercato_contracts::inventory::{
    ReservationCommitted, ReservationFailure, StockReleased, StockReservationFailed, StockReserved,
};
use mercato_contracts::orders::{CommitReservation, OrderLine, ReleaseStock, ReserveStock};
use mercato_messaging::{Context, Envelope, Event, Handler, HandlerError, HandlerFuture, Outbox};
use mercato_storage::Tx;

use crate::metrics::{Outcome, ReservationMetrics};
use crate::reservations::{self, Committed, ReserveError, Reserved};
use crate::store::reservations::NewReservation;

/// `StockReleased.cause` when the saga asked.
pub const CAUSE_RELEASED: &str = "released";
/// `StockReleased.cause` when the hold ran out.
pub const CAUSE_EXPIRED: &str = "expired";

/// Appends `event` for the order to the outbox in `tx`.
///
/// # Errors
/// The event does not serialise, or the database failed.
pub async fn publish<E: Event>(
    tx: &mut Tx,
    order_id: &str,
    event: &E,
    context: &Context,
) -> Result<(), HandlerError> {
    let mut envelope = Envelope::new(crate::NAME, order_id, event, context)?;
    mercato_messaging::outbox::append(tx, &mut envelope).await?;
    Ok(())
}

/// Applies `ReserveStock`, `ReleaseStock` and `CommitReservation`; the order's other events
/// pass through untouched.
#[derive(Debug)]
pub struct OnOrderCommands {
    outbox: Outbox,
    metrics: ReservationMetrics,
    /// The outcome of each event handled in the inbox's open transaction, counted once it
    /// commits; the inbox applies a batch of events in one. Each of the inbox's workers has an
    /// `OnOrderCommands` of its own (`for_worker`), so this is one transaction's.
    pending: Mutex<Vec<Option<Outcome>>>,
}

impl OnOrderCommands {
    #[must_use]
    pub fn new(outbox: Outbox, metrics: ReservationMetrics) -> Self {
        Self {
            outbox,
            metrics,
            pending: Mutex::new(Vec::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Option<Outcome>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn apply(&self, envelope: &Envelope, tx: &mut Tx) -> Result<Option<Outcome>, HandlerError> {
        let context = envelope.caused_context();
        if envelope.is::<ReserveStock>() {
            reserve(tx, &envelope.decode()?, &context).await
        } else if envelope.is::<ReleaseStock>() {
            release(tx, &envelope.decode()?, &context).await
        } else if envelope.is::<CommitReservation>() {
            commit(tx, &envelope.decode()?, &context).await
        } else {
            Ok(None)
        }
    }
}

impl Handler for OnOrderCommands {
    fn handle<'a>(&'a self, envelope: &'a Envelope, tx: &'a mut Tx) -> HandlerFuture<'a> {
        Box::pin(async move {
            let outcome = self.apply(envelope, tx).await;
            self.pending().push(outcome.as_ref().ok().copied().flatten());
            outcome.map(|_| ())
        })
    }

    fn committed(&self) {
        let outcomes = std::mem::take(&mut *self.pending());
        for outcome in outcomes.into_iter().flatten() {
            self.metrics.record(outcome);
        }
        self.outbox.committed();
    }

    fn rolled_back(&self) {
        self.pending().pop();
    }

    /// A worker of its own applies its own transactions, so it keeps its own pending outcomes.
    fn for_worker(&self) -> Option<Self> {
        Some(Self::new(self.outbox.clone(), self.metrics.clone()))
    }

    fn event_types(&self) -> &[&'static str] {
        &[ReserveStock::TYPE, ReleaseStock::TYPE, CommitReservation::TYPE]
    }
}

async fn reserve(
    tx: &mut Tx,
    command: &ReserveStock,
    context: &Context,
) -> Result<Option<Outcome>, HandlerError> {
    let order_id = command.order_id.as_str();
    let reservation = NewReservation {
        order_id,
        expires_at: command.expires_at,
        correlation_id: context.correlation_id.as_deref(),
        traceparent: context.traceparent.as_deref(),
    };
    let lines = command.lines.iter().map(|l| (l.sku.as_str(), l.quantity));
    match reservations::reserve(tx, &reservation, lines).await {
        Ok(Reserved::Repeated) => Ok(None),
        Ok(Reserved::Held(lines)) => {
            let event = StockReserved {
                order_id: order_id.to_owned(),
                lines: lines
                    .iter()
                    .map(|l| OrderLine {
                        sku: l.sku.as_str().to_owned(),
                        quantity: l.quantity.value(),
                    })
                    .collect(),
                expires_at: command.expires_at,
            };
            publish(tx, order_id, &event, context).await?;
            Ok(Some(Outcome::Reserved))
        }
        Ok(Reserved::Refused { reason, sku }) => {
            tracing::info!(order_id, %sku, ?reason, "reservation refused");
            let event = StockReservationFailed {
                order_id: order_id.to_owned(),
                reason,
                sku,
            };
            publish(tx, order_id, &event, context).await?;
            Ok(Some(match reason {
                ReservationFailure::OutOfStock => Outcome::OutOfStock,
                ReservationFailure::UnknownProduct => Outcome::UnknownProduct,
            }))
        }
        Err(e @ ReserveError::Malformed { .. }) => Err(HandlerError::Permanent(e.to_string())),
        Err(ReserveError::Storage(e)) => Err(e.into()),
    }
}

async fn release(
    tx: &mut Tx,
    command: &ReleaseStock,
    context: &Context,
) -> Result<Option<Outcome>, HandlerError> {
    let order_id = command.order_id.as_str();
    if !reservations::release(tx, order_id).await? {
        return Ok(None);
    }
    tracing::info!(order_id, reason = %command.reason, "reservation released");
    let event = StockReleased {
        order_id: order_id.to_owned(),
        cause: CAUSE_RELEASED.to_owned(),
    };
    publish(tx, order_id, &event, context).await?;
    Ok(Some(Outcome::Released))
}

async fn commit(
    tx: &mut Tx,
    command: &CommitReservation,
    context: &Context,
) -> Result<Option<Outcome>, HandlerError> {
    let order_id = command.order_id.as_str();
    match reservations::commit(tx, order_id).await? {
        Committed::Sold => {
            let event = ReservationCommitted {
                order_id: order_id.to_owned(),
            };
            publish(tx, order_id, &event, context).await?;
            Ok(Some(Outcome::Committed))
        }
        Committed::Repeated => Ok(None),
        Committed::OutOfStock { sku } => {
            // The order was paid for stock that is gone: someone has to make this right.
            tracing::error!(order_id, %sku, "an expired reservation was committed and its stock is no longer available");
            let event = StockReservationFailed {
                order_id: order_id.to_owned(),
                reason: ReservationFailure::OutOfStock,
                sku,
            };
            publish(tx, order_id, &event, context).await?;
            Ok(Some(Outcome::CommitFailed))
        }
        Committed::NotHeld(state) => {
            tracing::error!(
                order_id,
                state = state.map(|s| s.as_str()),
                "asked to commit a reservation that holds nothing"
            );
            Ok(None)
        }
    }
}
