//! Refunds: a late capture after the saga gave up, a captured payment refunded once, and a
//! refund that arrives before anything was charged.

use mercato_contracts::payments::{PaymentFailure, PaymentRefunded};
use mercato_payments::domain::PaymentStatus;
use mercato_testkit::{TestBackend, backend_tests};
use serde_json::Value;

use crate::support::{Tuning, amount, charge_command, order_id, spawn_app, spawn_app_with};

backend_tests!(
    a_charge_that_lands_after_its_failure_was_reported_is_captured_and_then_refunded,
    a_late_capture_after_a_refund_request_is_refunded,
    a_captured_payment_is_refunded_once,
    a_refund_before_the_charge_blocks_a_later_charge,
);

/// `tok_late` charges land `late_delay_ms` after the call; the worker gives each call 300 ms
/// and makes `max_attempts` of them, `backoff_ms` apart at first and at most 200 ms.
fn late_charges(t: &mut Tuning, late_delay_ms: u64, max_attempts: u32, backoff_ms: u64) {
    t.late_delay_ms = late_delay_ms;
    t.provider.timeout_ms = 300;
    t.provider.max_attempts = max_attempts;
    t.provider.backoff_ms = backoff_ms;
    t.provider.max_backoff_ms = 200;
}

async fn a_charge_that_lands_after_its_failure_was_reported_is_captured_and_then_refunded(
    backend: TestBackend,
) {
    let mut payments = spawn_app_with(backend, |t| late_charges(t, 1_500, 2, 50)).await;
    let order = order_id();
    payments.charge(&order, "cust-1", "tok_late").await;
    // Every attempt timed out: the saga hears of a failure, but the outcome is not known yet.
    payments
        .failed_with(&order, PaymentFailure::ProviderUnavailable)
        .await;
    // The saga cancels the order and asks for a refund of anything captured.
    payments.refund(&order).await;
    // The provider did charge; payments finds out with the same key and gives the money back.
    let refunded: PaymentRefunded = payments.decoded(&order).await;
    assert_eq!(refunded.amount, amount());
    assert_eq!(
        payments.answers(&order).await,
        ["PaymentFailed", "PaymentCaptured", "PaymentRefunded"]
    );
    let charges = payments.charges_for(&order).await;
    assert_eq!(charges.len(), 1, "one charge, however many attempts");
    assert_eq!(charges[0]["refunded"], true);
}

async fn a_late_capture_after_a_refund_request_is_refunded(backend: TestBackend) {
    let mut payments = spawn_app_with(backend, |t| late_charges(t, 2_000, 100, 100)).await;
    let order = order_id();
    payments.charge_late(&order).await;

    // The saga's payment timeout fired: it asks for a refund of whatever gets captured.
    payments.refund(&order).await;
    let marked = payments
        .payment_until(&order, "the refund request to be recorded", |p| {
            p.refund_requested
        })
        .await;
    assert_eq!(
        marked.status,
        PaymentStatus::Pending,
        "the refund was asked for before the capture"
    );

    let refunded: PaymentRefunded = payments.decoded(&order).await;
    let payment = payments.payment(&order).await.unwrap();
    assert_eq!(refunded.payment_id, payment.payment_id);
    assert_eq!(refunded.amount, amount());
    assert_eq!(payment.status, PaymentStatus::Refunded);
    assert_eq!(
        payments.answers(&order).await,
        ["PaymentCaptured", "PaymentRefunded"]
    );
    let charges = payments.charges_for(&order).await;
    assert_eq!(charges.len(), 1, "one charge, however many attempts");
    assert_eq!(charges[0]["refunded"], true);
    assert_eq!(
        charges[0]["refund_id"].as_str(),
        payment.provider_refund_id.as_deref()
    );
}

async fn a_captured_payment_is_refunded_once(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let order = payments.captured_order("cust-1").await;

    let refund = payments.refund(&order).await;
    payments.refund(&order).await;
    let answer = payments.answer::<PaymentRefunded>(&order).await;
    assert_eq!(answer.causation_id.as_deref(), Some(refund.id.as_str()));
    payments.until_handled(3).await;
    assert_eq!(
        payments.answers(&order).await,
        ["PaymentCaptured", "PaymentRefunded"]
    );
    let payment = payments.payment(&order).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Refunded);
    let call = |step: &str, outcome: &str| (step.to_owned(), 1, outcome.to_owned());
    assert_eq!(
        payments.attempt_log(&order).await,
        [call("charge", "succeeded"), call("refund", "succeeded")],
        "one call per step, each logged once"
    );
    let charge: Value = payments
        .sandbox
        .charge(payment.provider_charge_id.as_deref().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(charge["refunded"], true);
}

async fn a_refund_before_the_charge_blocks_a_later_charge(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let order = order_id();
    // Position 0 opts out of stream ordering: the two commands are applied in arrival order,
    // as they would be if the charge were overtaken for good.
    let mut refund = mercato_messaging::Envelope::new(
        "orders",
        &order,
        &mercato_contracts::orders::RefundPayment {
            order_id: order.clone(),
            reason: "customer_cancelled".into(),
        },
        &mercato_messaging::Context::default(),
    )
    .unwrap();
    refund.stream_seq = 0;
    payments.bus.publish(&refund).await.unwrap();
    let marker = payments
        .payment_until(&order, "the refund to be recorded", |_| true)
        .await;
    assert_eq!(marker.status, PaymentStatus::Failed);

    let mut charge = mercato_messaging::Envelope::new(
        "orders",
        &order,
        &charge_command(&order, "cust-1", "tok_visa"),
        &mercato_messaging::Context::default(),
    )
    .unwrap();
    charge.stream_seq = 0;
    payments.bus.publish(&charge).await.unwrap();
    payments.until_handled(2).await;
    assert_eq!(
        payments.payment(&order).await.unwrap().status,
        PaymentStatus::Failed
    );
    assert!(payments.charges_for(&order).await.is_empty());
    assert!(
        payments.answers(&order).await.is_empty(),
        "nothing captured, nothing to tell"
    );
}
