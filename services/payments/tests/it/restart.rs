//! A charge the provider is working on when payments stops, or dies, finishes after the
//! restart, charged once.

use mercato_contracts::payments::PaymentCaptured;
use mercato_payments::domain::PaymentStatus;
use mercato_testkit::{TestBackend, backend_tests};

use crate::support::{order_id, spawn_app_with};

backend_tests!(
    a_charge_in_flight_at_shutdown_finishes_after_the_restart_with_one_charge,
    a_charge_in_flight_at_a_crash_is_taken_up_after_its_lease_with_one_charge,
);

async fn a_charge_in_flight_at_shutdown_finishes_after_the_restart_with_one_charge(backend: TestBackend) {
    // The provider answers after 3 s; the call waits up to 10 s: the stop lands mid-call.
    let mut payments = spawn_app_with(backend, |t| {
        t.late_delay_ms = 3_000;
        t.provider.timeout_ms = 10_000;
    })
    .await;
    let order = order_id();
    payments.charge_late(&order).await;

    payments.stop().await;
    let stopped = payments.payment(&order).await.unwrap();
    assert_eq!(stopped.status, PaymentStatus::Pending);
    assert_eq!(stopped.attempts, 1);
    assert!(
        stopped.next_attempt_at <= mercato_storage::now_millis(),
        "the interrupted call's row is given back, due at once"
    );

    payments.start().await;
    payments.answer::<PaymentCaptured>(&order).await;
    assert_eq!(
        payments.payment(&order).await.unwrap().status,
        PaymentStatus::Captured
    );
    assert_eq!(payments.charges_for(&order).await.len(), 1);
    assert_eq!(payments.answers(&order).await, ["PaymentCaptured"]);
}

async fn a_charge_in_flight_at_a_crash_is_taken_up_after_its_lease_with_one_charge(backend: TestBackend) {
    // The provider answers after 3 s and the call waits up to 4 s, so the crash lands mid-call;
    // the lease (timeout + 1 s) still holds the row when the service comes back.
    let mut payments = spawn_app_with(backend, |t| {
        t.late_delay_ms = 3_000;
        t.provider.timeout_ms = 4_000;
        t.provider.max_attempts = 20;
    })
    .await;
    let order = order_id();
    payments.charge_late(&order).await;

    payments.crash().await;
    let crashed = payments.payment(&order).await.unwrap();
    assert_eq!(crashed.status, PaymentStatus::Pending);
    assert_eq!(crashed.attempts, 1);
    assert!(
        crashed.next_attempt_at > mercato_storage::now_millis(),
        "the dead worker's lease still holds the row"
    );

    payments.start().await;
    payments.answer::<PaymentCaptured>(&order).await;
    assert_eq!(payments.charges_for(&order).await.len(), 1);
    assert_eq!(payments.answers(&order).await, ["PaymentCaptured"]);
}
