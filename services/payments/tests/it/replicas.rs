//! Several instances of payments on one database and bus: each due payment is claimed by one
//! of them at a time, so the provider is never asked twice at once and nothing is charged twice.

use mercato_contracts::payments::PaymentCaptured;
use mercato_payments::domain::PaymentStatus;
use mercato_testkit::{TestBackend, backend_tests};

use crate::support::{idempotency_key, order_id, spawn};

backend_tests!(two_replicas_share_the_work_and_charge_each_order_once);

async fn two_replicas_share_the_work_and_charge_each_order_once(backend: TestBackend) {
    let mut payments = spawn(backend).await;
    payments.start_replica().await;
    let orders: Vec<String> = (0..8).map(|_| order_id()).collect();
    for order in &orders {
        payments.charge(order, "cust-1", "tok_flaky").await;
    }
    for order in &orders {
        payments.answer::<PaymentCaptured>(order).await;
    }
    for order in &orders {
        assert_eq!(payments.answers(order).await, ["PaymentCaptured"], "{order}");
        assert_eq!(
            payments.sandbox.charges(&idempotency_key(order)).await.len(),
            1,
            "{order}"
        );
        let payment = payments.payment(order).await.unwrap();
        assert_eq!(payment.status, PaymentStatus::Captured);
        assert_eq!(payment.attempts, 3, "no call for {order} was made twice at once");
    }
}
