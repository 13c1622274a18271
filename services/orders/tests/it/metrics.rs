//! The saga's metrics read from `/metrics` by their label values: orders by outcome and cancel
//! reason, each phase's time, compensations, step timeouts and batch sizes; an answer delivered
//! twice and a process restarted mid-saga count each decision once.

use mercato_contracts::orders::ChargePayment;
use mercato_contracts::payments::{PaymentFailed, PaymentFailure};
use mercato_testkit::metrics::Exposition;
use mercato_testkit::{PATIENCE, TestBackend, backend_tests, eventually};

use crate::support::{TestApp, spawn_for_a_customer};

backend_tests!(
    confirmed_declined_and_timed_out_orders_are_counted_by_outcome_reason_and_phase,
    a_process_restarted_mid_saga_counts_only_what_it_decides,
);

const OUTCOMES: &str = "mercato_orders_outcomes_total";
const PHASES: &str = "mercato_orders_saga_phase_duration_seconds_count";
const BUCKETS: &str = "mercato_orders_saga_phase_duration_seconds_bucket";
const SUMS: &str = "mercato_orders_saga_phase_duration_seconds_sum";

/// `/metrics` once `holds` is true of it.
async fn metrics_once(app: &TestApp, what: &str, holds: impl Fn(&Exposition) -> bool) -> Exposition {
    eventually(PATIENCE, what, || async {
        let exposition = app.exposition().await;
        holds(&exposition).then_some(exposition)
    })
    .await
}

async fn confirmed_declined_and_timed_out_orders_are_counted_by_outcome_reason_and_phase(
    backend: TestBackend,
) {
    let (app, mut commands, (_, token)) = spawn_for_a_customer(backend).await;
    // Each answered at once, well within the reserve timeout; the last never.
    let confirmed = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    app.stock_reserved(&mut commands, &confirmed).await;
    app.payment_captured(&mut commands, &confirmed).await;
    let declined = app.placed(&token, &[("MUG-001", 1)], "tok_decline").await;
    app.stock_reserved(&mut commands, &declined).await;
    commands.first::<ChargePayment>(&declined).await;
    let failed = PaymentFailed {
        order_id: declined.clone(),
        reason: PaymentFailure::Declined,
    };
    app.answer("payments", &declined, &failed).await;
    let timed_out = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    app.wait_for_status(&token, &confirmed, "confirmed").await;
    app.wait_for_status(&token, &declined, "cancelled").await;
    app.wait_for_status(&token, &timed_out, "cancelled").await;

    let metrics = metrics_once(&app, "three outcomes counted", |m| {
        m.value(OUTCOMES, &[]) == Some(3.0) && m.value(PHASES, &[]) == Some(6.0)
    })
    .await;
    assert_eq!(metrics.value("mercato_orders_placed_total", &[]), Some(3.0));
    for (outcome, reason) in [
        ("confirmed", "none"),
        ("cancelled", "payment_declined"),
        ("cancelled", "reservation_timeout"),
    ] {
        assert_eq!(
            metrics.value(OUTCOMES, &[("outcome", outcome), ("reason", reason)]),
            Some(1.0),
            "{outcome} {reason}"
        );
    }
    // Reserve: two answers and one timeout; charge: a capture and a decline; confirm: one.
    for (phase, count) in [("reserve", 3.0), ("charge", 2.0), ("confirm", 1.0)] {
        assert_eq!(metrics.value(PHASES, &[("phase", phase)]), Some(count), "{phase}");
        let inf = metrics.value(BUCKETS, &[("phase", phase), ("le", "+Inf")]);
        assert_eq!(inf, Some(count), "every {phase} observation is in a bucket");
    }
    // The timed-out reservation waited at least the reserve timeout.
    let waited = metrics.value(SUMS, &[("phase", "reserve")]);
    assert!(waited >= Some(1.5), "reserve phases took {waited:?}s in all");
    // The decline and the timeout each released the stock; nothing was refunded; the timer
    // gave up on one reservation and no charge.
    for (name, label, value, expected) in [
        ("mercato_orders_compensations_total", "kind", "release", Some(2.0)),
        ("mercato_orders_compensations_total", "kind", "refund", Some(0.0)),
        ("mercato_orders_step_timeouts_total", "step", "reserve", Some(1.0)),
        ("mercato_orders_step_timeouts_total", "step", "charge", Some(0.0)),
    ] {
        assert_eq!(metrics.value(name, &[(label, value)]), expected, "{name} {value}");
    }
    // Batch sizes: the relay published, and each answer came in a batch of the inbox.
    assert!(metrics.value("mercato_outbox_publish_batch_events_count", &[]) >= Some(1.0));
    let inventory = [("subscriber", "orders-on-inventory")];
    let answers = metrics.value("mercato_consumer_batch_messages_sum", &inventory);
    assert!(answers >= Some(2.0), "{answers:?} inventory answers in batches");
}

async fn a_process_restarted_mid_saga_counts_only_what_it_decides(backend: TestBackend) {
    let (mut app, mut commands, (_, token)) = spawn_for_a_customer(backend).await;
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    let reserved = app.stock_reserved(&mut commands, &order).await;
    metrics_once(&app, "the reservation timed", |m| {
        m.value(PHASES, &[("phase", "reserve")]) == Some(1.0)
    })
    .await;

    app.crash_and_restart().await;
    // Inventory's answer once more (the order is past it: nothing to decide), and payments'
    // capture, to the new process.
    let again = mercato_contracts::inventory::StockReserved {
        order_id: order.clone(),
        lines: reserved,
        expires_at: mercato_storage::now_millis() + 60_000,
    };
    app.answer("inventory", &order, &again).await;
    app.payment_captured(&mut commands, &order).await;
    app.wait_for_status(&token, &order, "confirmed").await;
    let metrics = metrics_once(&app, "the confirmation counted", |m| {
        m.value(OUTCOMES, &[("outcome", "confirmed")]) == Some(1.0)
    })
    .await;
    // The placement and the reservation were the first process's: not counted again.
    assert_eq!(metrics.value("mercato_orders_placed_total", &[]), Some(0.0));
    assert_eq!(metrics.value(PHASES, &[("phase", "reserve")]), Some(0.0));
    assert_eq!(metrics.value(PHASES, &[("phase", "charge")]), Some(1.0));
    assert_eq!(metrics.value(PHASES, &[("phase", "confirm")]), Some(1.0));
    assert_eq!(metrics.value(OUTCOMES, &[]), Some(1.0));
}
