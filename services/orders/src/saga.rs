//! The checkout saga's listeners: inventory's and payments' answers arrive through the inbox and
//! are decided by the order (see `domain`), and a timer acts on steps that took too long.
//!
//! Reserve stock → charge (the pivot) → commit the reservation and confirm. Only completed steps
//! are compensated, in reverse order, each once: a refund for a charge that may land late, then
//! the release of held stock.

use std::sync::Arc;
use std::time::Duration;

use mercato_contracts::inventory::{ReservationFailure, StockReservationFailed, StockReserved};
use mercato_contracts::payments::{PaymentCaptured, PaymentFailed, PaymentFailure};
use mercato_messaging::{Envelope, Event as _, Handler, HandlerError, HandlerFuture, UntilCommit};
use mercato_storage::Tx;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::backlog::Backlog;
use crate::checkout::{Checkout, OrderError};
use crate::domain::Reply;
use crate::metrics::Tally;

fn handler_error(e: OrderError) -> HandlerError {
    if e.is_transient() {
        HandlerError::Transient(e.to_string())
    } else {
        HandlerError::Permanent(e.to_string())
    }
}

/// The saga's reading of an answer from inventory or payments: the order it concerns and what it
/// says. Other event types are not answers.
///
/// # Errors
/// An answer whose payload does not decode.
pub fn reply_of(envelope: &Envelope) -> Result<Option<(String, Reply)>, HandlerError> {
    if envelope.is::<StockReserved>() {
        let e: StockReserved = envelope.decode()?;
        return Ok(Some((e.order_id, Reply::StockReserved)));
    }
    if envelope.is::<StockReservationFailed>() {
        let e: StockReservationFailed = envelope.decode()?;
        let unknown_product = e.reason == ReservationFailure::UnknownProduct;
        return Ok(Some((
            e.order_id,
            Reply::StockReservationFailed { unknown_product },
        )));
    }
    if envelope.is::<PaymentCaptured>() {
        let e: PaymentCaptured = envelope.decode()?;
        return Ok(Some((e.order_id, Reply::PaymentCaptured)));
    }
    if envelope.is::<PaymentFailed>() {
        let e: PaymentFailed = envelope.decode()?;
        return Ok(Some((
            e.order_id,
            Reply::PaymentFailed {
                declined: e.reason == PaymentFailure::Declined,
            },
        )));
    }
    Ok(None)
}

/// Applies inventory's and payments' answers to their orders.
#[derive(Debug)]
pub struct OnAnswers {
    checkout: Arc<Checkout>,
    /// The decisions of the inbox's open transaction, by order, counted once it commits (and
    /// their orders forgotten if it rolls back). Each of the inbox's workers has an `OnAnswers`
    /// of its own (`for_worker`), so this is one transaction's.
    decided: UntilCommit<(String, Tally)>,
}

impl OnAnswers {
    #[must_use]
    pub fn new(checkout: Arc<Checkout>) -> Self {
        Self {
            checkout,
            decided: UntilCommit::default(),
        }
    }

    async fn apply(&self, envelope: &Envelope, tx: &mut Tx) -> Result<Option<(String, Tally)>, HandlerError> {
        let Some((order_id, reply)) = reply_of(envelope)? else {
            return Ok(None);
        };
        let span = step_span(&order_id, step_of(&reply));
        let tally = self
            .checkout
            .react_in(tx, &order_id, reply, &envelope.caused_context())
            .instrument(span)
            .await
            .map_err(handler_error)?;
        Ok(tally.map(|tally| (order_id, tally)))
    }
}

/// The saga step an answer completes, as a span attribute.
fn step_of(reply: &Reply) -> &'static str {
    match reply {
        Reply::StockReserved => "stock_reserved",
        Reply::StockReservationFailed { .. } => "stock_reservation_failed",
        Reply::PaymentCaptured => "payment_captured",
        Reply::PaymentFailed { .. } => "payment_failed",
        Reply::StepTimedOut => "step_timed_out",
    }
}

/// The span of one saga step of `order_id`: what the order decided and appended for it. Its
/// `order.id` is how `mercato trace` finds the order's trace.
#[must_use]
pub fn step_span(order_id: &str, step: &'static str) -> tracing::Span {
    if !mercato_runtime::trace::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "saga step",
        otel.name = %format_args!("saga {step}"),
        order.id = order_id,
        saga.step = step,
    )
}

impl Handler for OnAnswers {
    fn handle<'a>(&'a self, envelope: &'a Envelope, tx: &'a mut Tx) -> HandlerFuture<'a> {
        Box::pin(async move {
            let decided = self.apply(envelope, tx).await;
            self.decided.handled(decided.as_ref().ok().cloned().flatten());
            decided.map(|_| ())
        })
    }

    fn committed(&self) {
        self.checkout.committed();
        for (_, tally) in self.decided.committed() {
            self.checkout.count(tally);
        }
    }

    fn rolled_back(&self) {
        if let Some((order_id, _)) = self.decided.rolled_back() {
            self.checkout.rolled_back(&order_id);
        }
    }

    /// A worker of its own applies its own transactions, so it keeps its own decisions.
    fn for_worker(&self) -> Option<Self> {
        Some(Self::new(Arc::clone(&self.checkout)))
    }

    fn event_types(&self) -> &[&'static str] {
        &[
            StockReserved::TYPE,
            StockReservationFailed::TYPE,
            PaymentCaptured::TYPE,
            PaymentFailed::TYPE,
        ]
    }
}

/// Acts on overdue steps and counts the backlog again every `every`, until shutdown.
pub async fn run_timer(
    checkout: Arc<Checkout>,
    backlog: Arc<Backlog>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if let Err(error) = checkout.expire_overdue().await {
                    tracing::warn!(%error, "saga timer pass failed; retrying on the next tick");
                }
                // Orders that ended since the last tick leave the backlog here.
                if let Err(error) = backlog.recount().await {
                    tracing::warn!(%error, "backlog not recounted; retrying on the next tick");
                }
            }
        }
    }
}
