//! Charges: each test card end to end, and commands that come twice or make no sense.

use mercato_contracts::payments::{PaymentCaptured, PaymentFailure};
use mercato_payments::domain::PaymentStatus;
use mercato_payments::store;
use mercato_testkit::{TestBackend, backend_tests, eventually};

use crate::support::{
    PATIENCE, amount, charge_command, idempotency_key, order_id, spawn_app, spawn_app_with,
};

backend_tests!(
    a_visa_card_is_captured_once,
    a_declined_card_fails_as_declined,
    a_flaky_provider_is_retried_until_it_captures_with_one_charge,
    a_hanging_provider_fails_as_unavailable_after_the_last_attempt,
    a_charge_command_delivered_twice_charges_once,
    a_charge_command_that_cannot_be_charged_is_parked,
    a_charge_reusing_another_orders_key_is_parked_and_charges_nothing,
);

async fn a_visa_card_is_captured_once(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let order = order_id();
    let command = payments.charge(&order, "cust-1", "tok_visa").await;

    let answer = payments.answer::<PaymentCaptured>(&order).await;
    let captured: PaymentCaptured = answer.decode().unwrap();
    let payment = payments.payment(&order).await.unwrap();
    assert_eq!(
        captured,
        PaymentCaptured {
            order_id: order.clone(),
            payment_id: payment.payment_id.clone(),
            amount: amount(),
        }
    );
    assert_eq!(answer.source, "payments");
    assert_eq!(answer.stream_seq, 1);
    assert_eq!(
        answer.correlation_id, command.correlation_id,
        "the saga's correlation id travels on"
    );
    assert_eq!(answer.causation_id.as_deref(), Some(command.id.as_str()));

    assert_eq!(payment.status, PaymentStatus::Captured);
    assert_eq!(payment.attempts, 1);
    let charges = payments.charges_for(&order).await;
    assert_eq!(charges.len(), 1);
    assert_eq!(payment.provider_charge_id.as_deref(), charges[0]["id"].as_str());
    assert_eq!(payments.answers(&order).await, ["PaymentCaptured"]);
    assert_eq!(payments.outbox(&order).await, ["PaymentCaptured"]);
}

async fn a_declined_card_fails_as_declined(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let order = order_id();
    payments.charge(&order, "cust-1", "tok_decline").await;

    payments.failed_with(&order, PaymentFailure::Declined).await;
    let payment = payments.payment(&order).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert_eq!(payment.attempts, 1, "a decline is not retried");
    assert_eq!(
        payments.attempt_log(&order).await,
        [("charge".to_owned(), 1, "declined".to_owned())]
    );
    let logged = &store::attempts(&payments.db, &order).await.unwrap()[0];
    assert!(
        logged
            .error
            .as_deref()
            .is_some_and(|e| e.contains("card_declined")),
        "{logged:?}"
    );
    assert!(logged.provider_id.is_none() && logged.duration_ms >= 0);
    assert!(payments.charges_for(&order).await.is_empty());
    assert_eq!(payments.answers(&order).await, ["PaymentFailed"]);
}

async fn a_flaky_provider_is_retried_until_it_captures_with_one_charge(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let order = order_id();
    payments.charge(&order, "cust-1", "tok_flaky").await;

    payments.answer::<PaymentCaptured>(&order).await;
    let payment = payments.payment(&order).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Captured);
    assert_eq!(payment.attempts, 3, "two 503s, then the capture");
    let call = |n, outcome: &str| ("charge".to_owned(), n, outcome.to_owned());
    assert_eq!(
        payments.attempt_log(&order).await,
        [
            call(1, "unavailable"),
            call(2, "unavailable"),
            call(3, "succeeded")
        ]
    );
    let log = store::attempts(&payments.db, &order).await.unwrap();
    assert!(
        log[0].error.as_deref().is_some_and(|e| e.contains("503")),
        "{log:?}"
    );
    assert_eq!(log[2].provider_id, payment.provider_charge_id);
    assert!(log[2].error.is_none());
    assert_eq!(
        payments.charges_for(&order).await.len(),
        1,
        "retries with the same key never charge twice"
    );
    assert_eq!(payments.answers(&order).await, ["PaymentCaptured"]);
}

async fn a_hanging_provider_fails_as_unavailable_after_the_last_attempt(backend: TestBackend) {
    let mut payments = spawn_app_with(backend, |t| {
        t.provider.timeout_ms = 300;
        t.provider.max_attempts = 2;
    })
    .await;
    let order = order_id();
    payments.charge(&order, "cust-1", "tok_hang").await;

    payments
        .failed_with(&order, PaymentFailure::ProviderUnavailable)
        .await;
    let payment = payments.payment(&order).await.unwrap();
    // Timed-out calls may still have charged: the payment stays open for reconciliation.
    assert_eq!(payment.status, PaymentStatus::Pending);
    assert!(payment.failure_reported);
    assert_eq!(payment.attempts, 2);
    assert!(
        payment
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("in time")),
        "the last error says it timed out: {:?}",
        payment.last_error
    );
    assert!(payments.charges_for(&order).await.is_empty());
    assert_eq!(payments.answers(&order).await, ["PaymentFailed"]);
}

async fn a_charge_command_delivered_twice_charges_once(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let order = order_id();
    let first = payments.charge(&order, "cust-1", "tok_visa").await;
    // The very same message again (a relay that published twice) ...
    payments.bus.publish(&first).await.unwrap();
    // ... and the saga sending the command once more, as a new message.
    payments
        .send(&order, &charge_command(&order, "cust-1", "tok_visa"))
        .await;

    payments.answer::<PaymentCaptured>(&order).await;
    payments.until_handled(2).await;
    assert_eq!(payments.answers(&order).await, ["PaymentCaptured"]);
    assert_eq!(payments.outbox(&order).await, ["PaymentCaptured"]);
    assert_eq!(payments.charges_for(&order).await.len(), 1);
    assert_eq!(payments.payment(&order).await.unwrap().attempts, 1);
}

async fn a_charge_command_that_cannot_be_charged_is_parked(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let order = order_id();
    let mut command = charge_command(&order, "cust-1", "tok_visa");
    command.amount.amount_minor = 0;
    let sent = payments.send(&order, &command).await;

    let parked = eventually(PATIENCE, "the command to be parked", || async {
        let letters = payments.bus.dead_letters(10).await.unwrap();
        letters.into_iter().find(|l| l.envelope.id == sent.id)
    })
    .await;
    assert_eq!(parked.group, mercato_payments::CONSUMER_GROUP);
    assert!(parked.error.contains("amount"), "{}", parked.error);
    assert!(payments.payment(&order).await.is_none());
    assert!(payments.answers(&order).await.is_empty());
}

async fn a_charge_reusing_another_orders_key_is_parked_and_charges_nothing(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let first = order_id();
    payments.charge(&first, "cust-1", "tok_visa").await;
    payments.answer::<PaymentCaptured>(&first).await;

    let second = order_id();
    let mut command = charge_command(&second, "cust-2", "tok_visa");
    command.idempotency_key = idempotency_key(&first);
    let sent = payments.send(&second, &command).await;
    let parked = eventually(PATIENCE, "the command to be parked", || async {
        let letters = payments.bus.dead_letters(10).await.unwrap();
        letters.into_iter().find(|l| l.envelope.id == sent.id)
    })
    .await;
    assert!(parked.error.contains("idempotency key"), "{}", parked.error);
    assert!(payments.payment(&second).await.is_none());
    assert_eq!(payments.charges_for(&first).await.len(), 1);
    assert!(payments.answers(&second).await.is_empty());
}
