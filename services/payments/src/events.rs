//! Payments on the wire: the handler for the saga's commands (category `orders`) and the
//! answers payments publishes (category `payments`, stream = the order id).

use std::sync::Arc;

use mercato_contracts::money::{Currency, InvalidCurrency, Money};
use mercato_contracts::orders::{ChargePayment, RefundPayment};
use mercato_contracts::payments::{PaymentCaptured, PaymentFailed, PaymentFailure, PaymentRefunded};
use mercato_messaging::{Context, Envelope, EnvelopeError, Event, Handler, HandlerError, HandlerFuture};
use mercato_storage::{Tx, now_millis};
use tokio::sync::Notify;

use crate::domain::{Amount, ChargeIntent, FailureReason, PaymentStatus};
use crate::store::{self, Payment};

/// Records the saga's payment commands; it never calls the provider. A charge is only written
/// down here, inside the inbox's transaction, and the worker (woken on commit) makes it:
/// holding a transaction open across an HTTP call would block every writer on SQLite.
#[derive(Debug, Clone)]
pub struct OnOrderCommand {
    pub(crate) wake: Arc<Notify>,
}

impl OnOrderCommand {
    async fn apply(envelope: &Envelope, tx: &mut Tx) -> Result<(), HandlerError> {
        if envelope.is::<ChargePayment>() {
            let command: ChargePayment = envelope.decode()?;
            let intent = Amount::new(command.amount.amount_minor, command.amount.currency.as_str())
                .and_then(|amount| {
                    ChargeIntent::new(
                        &command.order_id,
                        &command.customer_id,
                        amount,
                        &command.card_token,
                        &command.idempotency_key,
                    )
                })
                .map_err(|e| HandlerError::Permanent(format!("ChargePayment {}: {e}", envelope.id)))?;
            let recorded = store::record_charge(tx, &intent, envelope, now_millis())
                .await
                .map_err(|e| match e {
                    mercato_storage::StorageError::Conflict(_) => HandlerError::Permanent(format!(
                        "ChargePayment for order {}: idempotency key already used by another order",
                        intent.order_id
                    )),
                    other => other.into(),
                })?;
            if !recorded {
                tracing::debug!(order_id = %intent.order_id, "order already has a payment; charge command ignored");
            }
        } else if envelope.is::<RefundPayment>() {
            let command: RefundPayment = envelope.decode()?;
            let status = store::request_refund(tx, &command.order_id, envelope, now_millis()).await?;
            tracing::info!(order_id = %command.order_id, reason = %command.reason,
                status = status.as_str(), "refund requested");
        }
        Ok(())
    }
}

impl Handler for OnOrderCommand {
    fn handle<'a>(&'a self, envelope: &'a Envelope, tx: &'a mut Tx) -> HandlerFuture<'a> {
        Box::pin(Self::apply(envelope, tx))
    }

    fn committed(&self) {
        self.wake.notify_one();
    }

    fn event_types(&self) -> &[&'static str] {
        &[ChargePayment::TYPE, RefundPayment::TYPE]
    }
}

/// What `payment` is for. Its currency was checked when the charge was recorded, so a stored
/// one that is not a currency code is a corrupt row.
///
/// # Errors
/// [`InvalidCurrency`] for such a row.
pub fn amount_of(payment: &Payment) -> Result<Money, InvalidCurrency> {
    Ok(Money::new(
        payment.amount_minor,
        Currency::parse(&payment.currency)?,
    ))
}

fn money(payment: &Payment) -> Result<Money, EnvelopeError> {
    amount_of(payment).map_err(|e| {
        EnvelopeError::Payload(serde::ser::Error::custom(format!(
            "payment for order {}: currency {:?} {e}",
            payment.order_id, payment.currency
        )))
    })
}

/// `event` about the payment's order, in the saga's correlation and caused by `cause`.
fn answer<E: Event>(payment: &Payment, event: &E, cause: Option<&String>) -> Result<Envelope, EnvelopeError> {
    let context = Context {
        correlation_id: payment.correlation_id.clone(),
        causation_id: cause.cloned(),
        traceparent: payment.traceparent.clone(),
    };
    Envelope::new(crate::NAME, &payment.order_id, event, &context)
}

/// `PaymentCaptured`, caused by the charge command.
///
/// # Errors
/// The payload does not serialise, or the stored payment holds a malformed currency.
pub fn captured(payment: &Payment) -> Result<Envelope, EnvelopeError> {
    let event = PaymentCaptured {
        order_id: payment.order_id.clone(),
        payment_id: payment.payment_id.clone(),
        amount: money(payment)?,
    };
    answer(payment, &event, payment.charge_command_id.as_ref())
}

/// `PaymentFailed`, caused by the charge command.
///
/// # Errors
/// The payload does not serialise.
pub fn failed(payment: &Payment, reason: FailureReason) -> Result<Envelope, EnvelopeError> {
    let reason = match reason {
        FailureReason::Declined => PaymentFailure::Declined,
        FailureReason::ProviderUnavailable => PaymentFailure::ProviderUnavailable,
    };
    let event = PaymentFailed {
        order_id: payment.order_id.clone(),
        reason,
    };
    answer(payment, &event, payment.charge_command_id.as_ref())
}

/// `PaymentRefunded`, caused by the refund command.
///
/// # Errors
/// The payload does not serialise, or the stored payment holds a malformed currency.
pub fn refunded(payment: &Payment) -> Result<Envelope, EnvelopeError> {
    debug_assert!(matches!(
        payment.status,
        PaymentStatus::RefundPending | PaymentStatus::Refunded
    ));
    let event = PaymentRefunded {
        order_id: payment.order_id.clone(),
        payment_id: payment.payment_id.clone(),
        amount: money(payment)?,
    };
    answer(payment, &event, payment.refund_command_id.as_ref())
}
