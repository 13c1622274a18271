//! The order's facts on the wire: each fact is an envelope in the order's stream (category
//! `orders`), using the contract types, so the stream is at once the saga's log and its
//! messages to inventory, payments and notifications.

use mercato_contracts::inventory::{ReservationFailure, StockReservationFailed, StockReserved};
use mercato_contracts::orders::{
    ChargePayment, CommitReservation, OrderCancelled, OrderConfirmed, OrderDelivered, OrderLine, OrderPlaced,
    OrderShipped, PricedLine, RefundPayment, ReleaseStock, ReserveStock,
};
use mercato_contracts::payments::{PaymentCaptured, PaymentFailed, PaymentFailure};
use mercato_messaging::{Context, Envelope, EnvelopeError};

use crate::domain::{CancelReason, Fact, Line, Order};

pub(crate) fn line_out(l: &Line) -> PricedLine {
    PricedLine {
        sku: l.sku.clone(),
        name: l.name.clone(),
        quantity: l.quantity,
        unit_price: l.unit_price,
    }
}

fn line_in(l: PricedLine) -> Line {
    Line {
        sku: l.sku,
        name: l.name,
        quantity: l.quantity,
        unit_price: l.unit_price,
    }
}

fn wire_lines(lines: &[Line]) -> Vec<OrderLine> {
    lines
        .iter()
        .map(|l| OrderLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
        })
        .collect()
}

/// What a fact needs beyond the order: the card for a charge.
#[derive(Debug, Clone, Default)]
pub struct Extras<'a> {
    pub card_token: Option<&'a str>,
}

/// The envelope that records `fact` for `order` (the state before the fact; `None` when the
/// fact is the placement itself).
///
/// # Errors
/// The payload does not serialise.
pub fn to_envelope(
    order: Option<&Order>,
    fact: &Fact,
    extras: &Extras<'_>,
    context: &Context,
) -> Result<Envelope, EnvelopeError> {
    let source = crate::NAME;
    let (id, customer, lines, total) = match (order, fact) {
        (
            _,
            Fact::Placed {
                order_id,
                customer_id,
                lines,
                total,
            },
        ) => (order_id.clone(), customer_id.clone(), lines.clone(), *total),
        (Some(o), _) => (o.id.clone(), o.customer_id.clone(), o.lines.clone(), o.total),
        (None, _) => {
            return Err(EnvelopeError::Upcast(
                "a fact other than Placed needs the order".into(),
            ));
        }
    };
    let s = id.as_str();
    match fact {
        Fact::Placed { .. } => Envelope::new(
            source,
            s,
            &OrderPlaced {
                order_id: id.clone(),
                customer_id: customer,
                lines: lines.iter().map(line_out).collect(),
                total,
            },
            context,
        ),
        Fact::ReserveRequested { expires_at } => Envelope::new(
            source,
            s,
            &ReserveStock {
                order_id: id.clone(),
                lines: wire_lines(&lines),
                expires_at: *expires_at,
            },
            context,
        ),
        Fact::StockReserved => Envelope::new(
            source,
            s,
            &StockReserved {
                order_id: id.clone(),
                lines: wire_lines(&lines),
                expires_at: 0,
            },
            context,
        ),
        Fact::StockReservationFailed { unknown_product } => {
            let reason = if *unknown_product {
                ReservationFailure::UnknownProduct
            } else {
                ReservationFailure::OutOfStock
            };
            Envelope::new(
                source,
                s,
                &StockReservationFailed {
                    order_id: id.clone(),
                    reason,
                    sku: String::new(),
                },
                context,
            )
        }
        Fact::ChargeRequested { idempotency_key } => Envelope::new(
            source,
            s,
            &ChargePayment {
                order_id: id.clone(),
                customer_id: customer,
                amount: total,
                card_token: extras.card_token.unwrap_or_default().to_owned(),
                idempotency_key: idempotency_key.clone(),
            },
            context,
        ),
        Fact::PaymentCaptured => Envelope::new(
            source,
            s,
            &PaymentCaptured {
                order_id: id.clone(),
                payment_id: String::new(),
                amount: total,
            },
            context,
        ),
        Fact::PaymentFailed { declined } => {
            let reason = if *declined {
                PaymentFailure::Declined
            } else {
                PaymentFailure::ProviderUnavailable
            };
            Envelope::new(
                source,
                s,
                &PaymentFailed {
                    order_id: id.clone(),
                    reason,
                },
                context,
            )
        }
        Fact::CommitRequested => {
            Envelope::new(source, s, &CommitReservation { order_id: id.clone() }, context)
        }
        Fact::ReleaseRequested => Envelope::new(
            source,
            s,
            &ReleaseStock {
                order_id: id.clone(),
                reason: "order cancelled".into(),
            },
            context,
        ),
        Fact::RefundRequested => Envelope::new(
            source,
            s,
            &RefundPayment {
                order_id: id.clone(),
                reason: "order cancelled".into(),
            },
            context,
        ),
        Fact::Confirmed => Envelope::new(
            source,
            s,
            &OrderConfirmed {
                order_id: id.clone(),
                customer_id: customer,
                lines: lines.iter().map(line_out).collect(),
                total,
            },
            context,
        ),
        Fact::Cancelled { reason } => Envelope::new(
            source,
            s,
            &OrderCancelled {
                order_id: id.clone(),
                customer_id: customer,
                reason: reason.as_str().to_owned(),
            },
            context,
        ),
        Fact::Shipped => Envelope::new(
            source,
            s,
            &OrderShipped {
                order_id: id.clone(),
                customer_id: customer,
            },
            context,
        ),
        Fact::Delivered => Envelope::new(
            source,
            s,
            &OrderDelivered {
                order_id: id.clone(),
                customer_id: customer,
            },
            context,
        ),
    }
}

/// Whether an event of the order's stream of this type moves the order to another status; the
/// others change only its step, payment or deadline.
#[must_use]
pub fn changes_status(event_type: &str) -> bool {
    [
        <OrderConfirmed as mercato_messaging::Event>::TYPE,
        <OrderCancelled as mercato_messaging::Event>::TYPE,
        <OrderShipped as mercato_messaging::Event>::TYPE,
        <OrderDelivered as mercato_messaging::Event>::TYPE,
    ]
    .contains(&event_type)
}

/// The fact an envelope of the order's own stream records.
///
/// # Errors
/// A known type that does not decode, or an unknown type (a stream is written only here).
pub fn from_envelope(envelope: &Envelope) -> Result<Fact, EnvelopeError> {
    let unknown = || EnvelopeError::Upcast(format!("{} is not an order fact", envelope.event_type));
    Ok(match envelope.event_type.as_str() {
        t if t == <OrderPlaced as mercato_messaging::Event>::TYPE => {
            let e: OrderPlaced = envelope.decode()?;
            Fact::Placed {
                order_id: e.order_id,
                customer_id: e.customer_id,
                lines: e.lines.into_iter().map(line_in).collect(),
                total: e.total,
            }
        }
        t if t == <ReserveStock as mercato_messaging::Event>::TYPE => Fact::ReserveRequested {
            expires_at: envelope.decode::<ReserveStock>()?.expires_at,
        },
        t if t == <StockReserved as mercato_messaging::Event>::TYPE => Fact::StockReserved,
        t if t == <StockReservationFailed as mercato_messaging::Event>::TYPE => {
            let e: StockReservationFailed = envelope.decode()?;
            Fact::StockReservationFailed {
                unknown_product: e.reason == ReservationFailure::UnknownProduct,
            }
        }
        t if t == <ChargePayment as mercato_messaging::Event>::TYPE => Fact::ChargeRequested {
            idempotency_key: envelope.decode::<ChargePayment>()?.idempotency_key,
        },
        t if t == <PaymentCaptured as mercato_messaging::Event>::TYPE => Fact::PaymentCaptured,
        t if t == <PaymentFailed as mercato_messaging::Event>::TYPE => Fact::PaymentFailed {
            declined: envelope.decode::<PaymentFailed>()?.reason == PaymentFailure::Declined,
        },
        t if t == <CommitReservation as mercato_messaging::Event>::TYPE => Fact::CommitRequested,
        t if t == <ReleaseStock as mercato_messaging::Event>::TYPE => Fact::ReleaseRequested,
        t if t == <RefundPayment as mercato_messaging::Event>::TYPE => Fact::RefundRequested,
        t if t == <OrderConfirmed as mercato_messaging::Event>::TYPE => Fact::Confirmed,
        t if t == <OrderCancelled as mercato_messaging::Event>::TYPE => {
            let e: OrderCancelled = envelope.decode()?;
            Fact::Cancelled {
                reason: CancelReason::parse(&e.reason).ok_or_else(unknown)?,
            }
        }
        t if t == <OrderShipped as mercato_messaging::Event>::TYPE => Fact::Shipped,
        t if t == <OrderDelivered as mercato_messaging::Event>::TYPE => Fact::Delivered,
        _ => return Err(unknown()),
    })
}

#[cfg(test)]
mod tests {
    use mercato_contracts::money::{Currency, Money};
    use mercato_kit::aggregate::Aggregate as _;

    use super::*;

    #[test]
    fn every_fact_round_trips_through_its_envelope() {
        let lines = vec![Line {
            sku: "MUG-001".into(),
            name: "Mug".into(),
            quantity: 2,
            unit_price: Money::new(1_250, Currency::EUR),
        }];
        let placed = Order::place("o1", "c1", lines, 99).unwrap();
        let order = Order::replay(placed.clone()).unwrap();
        let facts = [
            Fact::ReserveRequested { expires_at: 99 },
            Fact::StockReserved,
            Fact::StockReservationFailed {
                unknown_product: true,
            },
            Fact::ChargeRequested {
                idempotency_key: "k".into(),
            },
            Fact::PaymentCaptured,
            Fact::PaymentFailed { declined: false },
            Fact::CommitRequested,
            Fact::ReleaseRequested,
            Fact::RefundRequested,
            Fact::Confirmed,
            Fact::Cancelled {
                reason: CancelReason::PaymentTimeout,
            },
            Fact::Shipped,
            Fact::Delivered,
        ];
        let context = Context::default();
        let env = to_envelope(None, &placed[0], &Extras::default(), &context).unwrap();
        assert_eq!(from_envelope(&env).unwrap(), placed[0]);
        for fact in facts {
            let env = to_envelope(
                Some(&order),
                &fact,
                &Extras {
                    card_token: Some("tok_visa"),
                },
                &context,
            )
            .unwrap();
            assert_eq!(env.source, "orders");
            assert_eq!(from_envelope(&env).unwrap(), fact);
        }
    }
}
