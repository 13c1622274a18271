//! What users ask of the checkout: orders by outcome and cancel reason, the time of each saga
//! phase (with the order's trace as the exemplar of its bucket), compensations, and steps the
//! timer gave up on.
//!
//! A decision is counted once, when it commits: the append's expected version lets only one
//! decision of each kind into an order's stream, so counting what committed (never a replay of
//! the stream, a retried transaction or a projection rebuild) counts each order once, whichever
//! process decides it and whenever an earlier one stopped.

use mercato_runtime::metrics::{TracedHistogram, observe_in_trace, traced_histogram};
use mercato_runtime::resilience::register_metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::domain::{CancelReason, Fact, Order, Status, Step};

/// Seconds: a reservation takes milliseconds, a charge through a slow provider many seconds.
const PHASE_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn phase_histogram() -> TracedHistogram {
    traced_histogram(&PHASE_BUCKETS)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

/// `mercato_orders_placed_total`, `mercato_orders_outcomes_total{outcome,reason}` (confirmed
/// with reason `none`, or cancelled with its reason), `mercato_orders_saga_phase_duration_seconds{phase}`
/// (`reserve`, `charge`, and `confirm`: placement to confirmation),
/// `mercato_orders_compensations_total{kind}` (`release`, `refund`) and
/// `mercato_orders_step_timeouts_total{step}` (`reserve`, `charge`).
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    placed: Counter,
    outcomes: Family<OutcomeLabels, Counter>,
    phases: Family<PhaseLabels, TracedHistogram, fn() -> TracedHistogram>,
    compensations: Family<KindLabels, Counter>,
    timeouts: Family<StepLabels, Counter>,
}

impl SagaMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            placed: Counter::default(),
            outcomes: Family::default(),
            phases: Family::new_with_constructor(phase_histogram),
            compensations: Family::default(),
            timeouts: Family::default(),
        };
        register_metrics!(registry, {
            metrics.placed => "mercato_orders_placed", "Orders placed (an idempotent replay is not a new order)";
            metrics.outcomes => "mercato_orders_outcomes", "Orders that ended, confirmed or cancelled, by cancel reason";
            metrics.phases => "mercato_orders_saga_phase_duration_seconds", "Time of a saga phase: reserve (to inventory's answer or the timeout), charge (to payments' answer or the timeout), confirm (placement to confirmation)";
            metrics.compensations => "mercato_orders_compensations", "Compensations the saga requested, by kind";
            metrics.timeouts => "mercato_orders_step_timeouts", "Saga steps the timer gave up on, by step";
        });
        metrics.expose_every_series();
        metrics
    }

    /// Every series these metrics can have, at zero: a rate over a series that appears with
    /// its first event would miss that event, and an alert on it would not know it yet.
    fn expose_every_series(&self) {
        let outcomes = CancelReason::ALL
            .iter()
            .map(|r| ("cancelled", r.as_str()))
            .chain([("confirmed", "none")]);
        for (outcome, reason) in outcomes {
            drop(self.outcomes.get_or_create(&OutcomeLabels { outcome, reason }));
        }
        for phase in ["reserve", "charge", "confirm"] {
            drop(self.phases.get_or_create(&PhaseLabels { phase }));
        }
        for kind in ["release", "refund"] {
            drop(self.compensations.get_or_create(&KindLabels { kind }));
        }
        for step in ["reserve", "charge"] {
            drop(self.timeouts.get_or_create(&StepLabels { step }));
        }
    }

    /// Counts a committed decision.
    pub fn record(&self, tally: Tally) {
        if tally.placed {
            self.placed.inc();
        }
        if let Some((outcome, reason)) = tally.outcome {
            self.outcomes
                .get_or_create(&OutcomeLabels { outcome, reason })
                .inc();
        }
        for (phase, seconds) in tally.phases {
            let histogram = self.phases.get_or_create(&PhaseLabels { phase });
            observe_in_trace(&histogram, seconds, tally.trace_id.clone());
        }
        for kind in tally.compensations {
            self.compensations.get_or_create(&KindLabels { kind }).inc();
        }
        if let Some(step) = tally.timed_out {
            self.timeouts.get_or_create(&StepLabels { step }).inc();
        }
    }
}

/// When an order's stream began and when its last event was recorded (Unix milliseconds): a
/// pending order's current phase began with its last append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub placed_at: i64,
    pub last_at: i64,
}

/// What one decision counts, taken when it is made and counted once it committed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    placed: bool,
    outcome: Option<(&'static str, &'static str)>,
    phases: Vec<(&'static str, f64)>,
    compensations: Vec<&'static str>,
    timed_out: Option<&'static str>,
    trace_id: Option<String>,
}

impl Tally {
    /// The tally of appending `facts` to `before` (`None` for a placement) at `now` (Unix
    /// milliseconds), in the trace `trace_id`.
    #[must_use]
    pub fn of(before: Option<(&Order, Times)>, facts: &[Fact], now: i64, trace_id: Option<String>) -> Self {
        let mut tally = Self {
            trace_id,
            ..Self::default()
        };
        let seconds = |since: i64| {
            #[allow(clippy::cast_precision_loss)]
            let seconds = (now - since).max(0) as f64 / 1_000.0;
            seconds
        };
        let pending = before.filter(|(order, _)| order.status == Status::Pending);
        let mut payment_failed = false;
        for fact in facts {
            match fact {
                Fact::Placed { .. } => tally.placed = true,
                Fact::StockReserved | Fact::StockReservationFailed { .. } => {
                    if let Some((_, times)) = pending {
                        tally.phases.push(("reserve", seconds(times.last_at)));
                    }
                }
                Fact::PaymentCaptured | Fact::PaymentFailed { .. } => {
                    payment_failed |= matches!(fact, Fact::PaymentFailed { .. });
                    if let Some((_, times)) = pending {
                        tally.phases.push(("charge", seconds(times.last_at)));
                    }
                }
                Fact::ReleaseRequested => tally.compensations.push("release"),
                Fact::RefundRequested => tally.compensations.push("refund"),
                Fact::Confirmed => {
                    tally.outcome = Some(("confirmed", "none"));
                    if let Some((_, times)) = pending {
                        tally.phases.push(("confirm", seconds(times.placed_at)));
                    }
                }
                Fact::Cancelled { reason } => {
                    tally.outcome = Some(("cancelled", reason.as_str()));
                    // The timer's own cancellations: the phase ends with it, as a timeout.
                    let timed_out = match (reason, pending.map(|(o, _)| o.step)) {
                        (CancelReason::ReservationTimeout, Some(Step::Reserving)) => Some("reserve"),
                        (CancelReason::PaymentTimeout, Some(Step::Charging)) if !payment_failed => {
                            Some("charge")
                        }
                        _ => None,
                    };
                    if let (Some(step), Some((_, times))) = (timed_out, pending) {
                        tally.timed_out = Some(step);
                        tally.phases.push((step, seconds(times.last_at)));
                    }
                }
                _ => {}
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use mercato_contracts::money::{Currency, Money};
    use mercato_kit::aggregate::Aggregate as _;

    use super::*;
    use crate::domain::{Line, Reply};

    const PLACED_AT: i64 = 1_000;

    fn placed() -> Order {
        let line = Line {
            sku: "MUG-001".into(),
            name: "Mug".into(),
            quantity: 1,
            unit_price: Money::new(1_250, Currency::EUR),
        };
        Order::replay(Order::place("o1", "c1", vec![line], 0).unwrap()).unwrap()
    }

    fn at(last_at: i64) -> Times {
        Times {
            placed_at: PLACED_AT,
            last_at,
        }
    }

    fn charging() -> Order {
        let order = placed();
        order
            .react(Reply::StockReserved)
            .into_iter()
            .fold(order, Order::with)
    }

    #[test]
    fn a_placement_counts_the_order_placed_and_nothing_else() {
        let facts = Order::place("o1", "c1", placed().lines, 0).unwrap();
        let tally = Tally::of(None, &facts, PLACED_AT, None);
        assert!(tally.placed);
        assert_eq!((tally.outcome, tally.phases.len()), (None, 0));
    }

    #[test]
    fn a_capture_ends_the_charge_and_times_the_whole_checkout() {
        let order = charging();
        let facts = order.react(Reply::PaymentCaptured);
        let tally = Tally::of(Some((&order, at(1_500))), &facts, 3_000, Some("t".into()));
        assert_eq!(tally.outcome, Some(("confirmed", "none")));
        assert_eq!(tally.phases, [("charge", 1.5), ("confirm", 2.0)]);
        assert_eq!(tally.trace_id.as_deref(), Some("t"));
        assert!(tally.compensations.is_empty());
    }

    #[test]
    fn a_decline_releases_the_stock_and_is_no_timeout() {
        let order = charging();
        let facts = order.react(Reply::PaymentFailed { declined: false });
        let tally = Tally::of(Some((&order, at(1_500))), &facts, 2_000, None);
        assert_eq!(tally.outcome, Some(("cancelled", "payment_timeout")));
        assert_eq!(tally.compensations, ["release"]);
        assert_eq!((tally.timed_out, tally.phases), (None, vec![("charge", 0.5)]));
    }

    #[test]
    fn the_timer_giving_up_on_a_charge_is_a_charge_timeout_with_both_compensations() {
        let order = charging();
        let facts = order.react(Reply::StepTimedOut);
        let tally = Tally::of(Some((&order, at(1_500))), &facts, 11_500, None);
        assert_eq!(tally.timed_out, Some("charge"));
        assert_eq!(tally.compensations, ["refund", "release"]);
        assert_eq!(tally.phases, [("charge", 10.0)]);
    }

    #[test]
    fn a_late_reply_to_a_cancelled_order_times_no_phase() {
        let order = placed();
        let cancelled = order
            .cancel_by_customer()
            .unwrap()
            .into_iter()
            .fold(order, Order::with);
        let facts = cancelled.react(Reply::StockReserved);
        let tally = Tally::of(Some((&cancelled, at(1_500))), &facts, 2_000, None);
        assert!(tally.phases.is_empty());
        assert_eq!((tally.outcome, tally.compensations.len()), (None, 0));
    }
}
