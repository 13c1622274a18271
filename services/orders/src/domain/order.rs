//! The order aggregate: state from facts, decisions from commands and replies.

use mercato_contracts::money::{Money, MoneyError};
use mercato_kit::aggregate::Aggregate;

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
}

/// Why lines cannot be placed as one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLines {
    #[error("an order needs at least one line")]
    Empty,
    /// Lines priced in different currencies, or a total past what an amount holds.
    #[error(transparent)]
    Total(#[from] MoneyError),
}

/// What `lines` cost together, in their one currency.
///
/// # Errors
/// [`InvalidLines`].
pub fn total(lines: &[Line]) -> Result<Money, InvalidLines> {
    let first = lines.first().ok_or(InvalidLines::Empty)?;
    let total = lines
        .iter()
        .try_fold(Money::zero(first.unit_price.currency), |sum, l| {
            sum.checked_add(l.unit_price.checked_mul(l.quantity)?)
        })?;
    Ok(total)
}

/// Why an order was cancelled, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    OutOfStock,
    UnknownProduct,
    PaymentDeclined,
    PaymentTimeout,
    ReservationTimeout,
    CustomerCancelled,
}

impl CancelReason {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::UnknownProduct => "unknown_product",
            Self::PaymentDeclined => "payment_declined",
            Self::PaymentTimeout => "payment_timeout",
            Self::ReservationTimeout => "reservation_timeout",
            Self::CustomerCancelled => "customer_cancelled",
        }
    }

    /// Every reason.
    pub const ALL: [Self; 6] = [
        Self::OutOfStock,
        Self::UnknownProduct,
        Self::PaymentDeclined,
        Self::PaymentTimeout,
        Self::ReservationTimeout,
        Self::CustomerCancelled,
    ];

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Where the order stands, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

impl Status {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The saga step a pending order waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Waiting for inventory to hold the stock.
    Reserving,
    /// Stock held; waiting for payments to capture (the pivot).
    Charging,
    /// Nothing outstanding.
    Done,
}

/// Everything recorded in an order's stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Placed {
        order_id: String,
        customer_id: String,
        lines: Vec<Line>,
        total: Money,
    },
    /// The saga asked inventory to hold the lines until `expires_at`.
    ReserveRequested {
        expires_at: i64,
    },
    StockReserved,
    StockReservationFailed {
        unknown_product: bool,
    },
    /// The saga asked payments to charge.
    ChargeRequested {
        idempotency_key: String,
    },
    PaymentCaptured,
    PaymentFailed {
        declined: bool,
    },
    CommitRequested,
    ReleaseRequested,
    RefundRequested,
    Confirmed,
    Cancelled {
        reason: CancelReason,
    },
    Shipped,
    Delivered,
}

/// A reply or a clock tick the saga reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    StockReserved,
    StockReservationFailed {
        unknown_product: bool,
    },
    PaymentCaptured,
    PaymentFailed {
        declined: bool,
    },
    /// The current step's deadline passed.
    StepTimedOut,
}

/// The facts to append (possibly none).
pub type Decision = Vec<Fact>;

/// An order: its data, where it stands, and what the saga did so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub lines: Vec<Line>,
    pub total: Money,
    pub status: Status,
    pub step: Step,
    pub cancel_reason: Option<CancelReason>,
    pub stock_held: bool,
    pub payment_captured: bool,
    pub release_requested: bool,
    pub refund_requested: bool,
    /// Facts in the stream (its version).
    pub version: i64,
}

impl Aggregate for Order {
    type Event = Fact;

    fn apply(state: Option<Self>, fact: Fact) -> Option<Self> {
        let Some(mut order) = state else {
            return match fact {
                Fact::Placed {
                    order_id,
                    customer_id,
                    lines,
                    total,
                } => Some(Self {
                    id: order_id,
                    customer_id,
                    lines,
                    total,
                    status: Status::Pending,
                    step: Step::Reserving,
                    cancel_reason: None,
                    stock_held: false,
                    payment_captured: false,
                    release_requested: false,
                    refund_requested: false,
                    version: 1,
                }),
                _ => None,
            };
        };
        order.version += 1;
        match fact {
            Fact::Placed { .. } | Fact::ReserveRequested { .. } | Fact::CommitRequested => {}
            Fact::StockReserved => order.stock_held = true,
            Fact::StockReservationFailed { .. } | Fact::PaymentFailed { .. } => {}
            Fact::ChargeRequested { .. } => order.step = Step::Charging,
            Fact::PaymentCaptured => order.payment_captured = true,
            Fact::ReleaseRequested => order.release_requested = true,
            Fact::RefundRequested => order.refund_requested = true,
            Fact::Confirmed => {
                order.status = Status::Confirmed;
                order.step = Step::Done;
            }
            Fact::Cancelled { reason } => {
                order.status = Status::Cancelled;
                order.step = Step::Done;
                order.cancel_reason = Some(reason);
            }
            Fact::Shipped => order.status = Status::Shipped,
            Fact::Delivered => order.status = Status::Delivered,
        }
        Some(order)
    }
}

impl Order {
    /// The facts that open an order: placed, and the first saga step.
    ///
    /// # Errors
    /// [`InvalidLines`]: no lines, lines in different currencies, or a total out of range.
    pub fn place(
        order_id: &str,
        customer_id: &str,
        lines: Vec<Line>,
        reservation_expires_at: i64,
    ) -> Result<Decision, InvalidLines> {
        let total = total(&lines)?;
        Ok(vec![
            Fact::Placed {
                order_id: order_id.to_owned(),
                customer_id: customer_id.to_owned(),
                lines,
                total,
            },
            Fact::ReserveRequested {
                expires_at: reservation_expires_at,
            },
        ])
    }

    /// Compensations for what has completed so far, in reverse order, each at most once.
    fn compensate(&self) -> Decision {
        let mut facts = Vec::new();
        if self.step == Step::Charging && !self.refund_requested {
            // The charge may still land after we give up; payments refunds it when it does.
            facts.push(Fact::RefundRequested);
        }
        if !self.release_requested {
            facts.push(Fact::ReleaseRequested);
        }
        facts
    }

    /// The saga's reaction to a reply or a timeout.
    #[must_use]
    pub fn react(&self, reply: Reply) -> Decision {
        match (self.status, self.step, reply) {
            (Status::Pending, Step::Reserving, Reply::StockReserved) => {
                vec![
                    Fact::StockReserved,
                    Fact::ChargeRequested {
                        idempotency_key: format!("charge-{}", self.id),
                    },
                ]
            }
            (Status::Pending, Step::Reserving, Reply::StockReservationFailed { unknown_product }) => {
                let reason = if unknown_product {
                    CancelReason::UnknownProduct
                } else {
                    CancelReason::OutOfStock
                };
                vec![
                    Fact::StockReservationFailed { unknown_product },
                    Fact::Cancelled { reason },
                ]
            }
            (Status::Pending, Step::Reserving, Reply::StepTimedOut) => {
                // Inventory may still hold stock for a late reservation: release it.
                let mut facts = self.compensate();
                facts.push(Fact::Cancelled {
                    reason: CancelReason::ReservationTimeout,
                });
                facts
            }
            (Status::Pending, Step::Charging, Reply::PaymentCaptured) => {
                vec![Fact::PaymentCaptured, Fact::CommitRequested, Fact::Confirmed]
            }
            (Status::Pending, Step::Charging, Reply::PaymentFailed { declined }) => {
                let reason = if declined {
                    CancelReason::PaymentDeclined
                } else {
                    CancelReason::PaymentTimeout
                };
                let mut facts = vec![Fact::PaymentFailed { declined }];
                if !self.release_requested {
                    facts.push(Fact::ReleaseRequested);
                }
                facts.push(Fact::Cancelled { reason });
                facts
            }
            (Status::Pending, Step::Charging, Reply::StepTimedOut) => {
                let mut facts = self.compensate();
                facts.push(Fact::Cancelled {
                    reason: CancelReason::PaymentTimeout,
                });
                facts
            }
            // Replies that come after the order ended: undo what they did, once.
            (Status::Cancelled, _, Reply::StockReserved) if !self.stock_held => {
                let mut facts = vec![Fact::StockReserved];
                if !self.release_requested {
                    facts.push(Fact::ReleaseRequested);
                }
                facts
            }
            (Status::Cancelled, _, Reply::PaymentCaptured) if !self.payment_captured => {
                let mut facts = vec![Fact::PaymentCaptured];
                if !self.refund_requested {
                    facts.push(Fact::RefundRequested);
                }
                facts
            }
            _ => Vec::new(),
        }
    }

    /// A customer's cancellation.
    ///
    /// # Errors
    /// The order has gone past the point where it can be cancelled (the status it is in).
    pub fn cancel_by_customer(&self) -> Result<Decision, Status> {
        if self.status != Status::Pending {
            return Err(self.status);
        }
        let mut facts = self.compensate();
        facts.push(Fact::Cancelled {
            reason: CancelReason::CustomerCancelled,
        });
        Ok(facts)
    }

    /// # Errors
    /// The order is not confirmed.
    pub fn ship(&self) -> Result<Decision, Status> {
        if self.status == Status::Confirmed {
            Ok(vec![Fact::Shipped])
        } else {
            Err(self.status)
        }
    }

    /// # Errors
    /// The order is not shipped.
    pub fn deliver(&self) -> Result<Decision, Status> {
        if self.status == Status::Shipped {
            Ok(vec![Fact::Delivered])
        } else {
            Err(self.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use mercato_contracts::money::Currency;

    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR)
    }

    fn placed() -> Order {
        let lines = vec![
            Line {
                sku: "MUG-001".into(),
                name: "Mug".into(),
                quantity: 2,
                unit_price: eur(1_250),
            },
            Line {
                sku: "TEE-001".into(),
                name: "Tee".into(),
                quantity: 1,
                unit_price: eur(1_999),
            },
        ];
        Order::replay(Order::place("o1", "c1", lines, 0).unwrap()).unwrap()
    }

    fn line(sku: &str, quantity: i64, unit_price: Money) -> Line {
        Line {
            sku: sku.into(),
            name: sku.into(),
            quantity,
            unit_price,
        }
    }

    #[test]
    fn the_total_is_the_sum_of_the_line_totals() {
        assert_eq!(placed().total, eur(2 * 1_250 + 1_999));
    }

    #[test]
    fn lines_in_two_currencies_or_past_the_range_are_not_placed() {
        let mixed = vec![line("A", 1, eur(1)), line("B", 1, Money::new(1, Currency::USD))];
        assert_eq!(
            Order::place("o1", "c1", mixed, 0),
            Err(InvalidLines::Total(MoneyError::CurrencyMismatch(
                Currency::EUR,
                Currency::USD
            )))
        );
        let huge = vec![line("A", 100, eur(i64::MAX / 50))];
        assert_eq!(
            Order::place("o1", "c1", huge, 0),
            Err(InvalidLines::Total(MoneyError::Overflow))
        );
        let summed_past_the_range = vec![line("A", 1, eur(i64::MAX)), line("B", 1, eur(1))];
        assert_eq!(
            total(&summed_past_the_range),
            Err(InvalidLines::Total(MoneyError::Overflow))
        );
        assert_eq!(Order::place("o1", "c1", Vec::new(), 0), Err(InvalidLines::Empty));
    }

    fn after(order: Order, facts: Decision) -> Order {
        facts.into_iter().fold(order, Order::with)
    }

    #[test]
    fn placing_totals_the_lines_and_asks_for_stock() {
        let order = placed();
        assert_eq!(order.total, eur(4_499));
        assert_eq!(
            (order.status, order.step, order.version),
            (Status::Pending, Step::Reserving, 2)
        );
    }

    #[test]
    fn the_happy_path_reserves_charges_commits_and_confirms() {
        let order = placed();
        let order = after(order.clone(), order.react(Reply::StockReserved));
        assert_eq!(order.step, Step::Charging);
        let decision = order.react(Reply::PaymentCaptured);
        assert_eq!(
            decision,
            [Fact::PaymentCaptured, Fact::CommitRequested, Fact::Confirmed]
        );
        assert_eq!(after(order, decision).status, Status::Confirmed);
    }

    #[test]
    fn out_of_stock_cancels_without_compensation() {
        let order = placed();
        let decision = order.react(Reply::StockReservationFailed {
            unknown_product: false,
        });
        assert_eq!(
            decision.last(),
            Some(&Fact::Cancelled {
                reason: CancelReason::OutOfStock
            })
        );
        assert!(
            !decision.contains(&Fact::ReleaseRequested),
            "nothing was held, nothing to release"
        );
    }

    #[test]
    fn a_declined_card_releases_the_stock_and_cancels() {
        let order = placed();
        let order = after(order.clone(), order.react(Reply::StockReserved));
        let decision = order.react(Reply::PaymentFailed { declined: true });
        assert_eq!(
            decision,
            [
                Fact::PaymentFailed { declined: true },
                Fact::ReleaseRequested,
                Fact::Cancelled {
                    reason: CancelReason::PaymentDeclined
                }
            ]
        );
    }

    #[test]
    fn a_payment_timeout_refunds_then_releases_in_reverse_order_and_a_late_capture_changes_nothing_more() {
        let order = placed();
        let order = after(order.clone(), order.react(Reply::StockReserved));
        let decision = order.react(Reply::StepTimedOut);
        assert_eq!(
            decision,
            [
                Fact::RefundRequested,
                Fact::ReleaseRequested,
                Fact::Cancelled {
                    reason: CancelReason::PaymentTimeout
                }
            ]
        );
        let order = after(order, decision);
        // The refund was requested already: the late capture is only recorded.
        assert_eq!(order.react(Reply::PaymentCaptured), [Fact::PaymentCaptured]);
    }

    #[test]
    fn duplicate_and_late_replies_decide_nothing() {
        let order = placed();
        let order = after(order.clone(), order.react(Reply::StockReserved));
        assert!(order.react(Reply::StockReserved).is_empty());
        let confirmed = after(order.clone(), order.react(Reply::PaymentCaptured));
        assert!(confirmed.react(Reply::PaymentCaptured).is_empty());
        assert!(confirmed.react(Reply::StepTimedOut).is_empty());
        assert!(
            confirmed
                .react(Reply::PaymentFailed { declined: true })
                .is_empty()
        );
    }

    #[test]
    fn stock_reserved_after_a_timeout_is_released() {
        let order = placed();
        let cancelled = after(order.clone(), order.react(Reply::StepTimedOut));
        assert_eq!(cancelled.cancel_reason, Some(CancelReason::ReservationTimeout));
        // The timeout asked for a release already; the late reservation is only recorded.
        assert_eq!(cancelled.react(Reply::StockReserved), [Fact::StockReserved]);
    }

    #[test]
    fn customers_cancel_only_pending_orders() {
        let order = placed();
        assert!(order.cancel_by_customer().is_ok());
        let confirmed = after(order.clone(), vec![Fact::StockReserved, Fact::Confirmed]);
        assert_eq!(confirmed.cancel_by_customer(), Err(Status::Confirmed));
        assert!(confirmed.ship().is_ok());
        assert_eq!(confirmed.deliver(), Err(Status::Confirmed));
    }
}
