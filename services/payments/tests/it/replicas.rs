//! Several instances of payments on one database and bus: each due payment is claimed by one
//! of them at a time, so the provider is never asked twice at once and nothing is charged twice.

use mercato_contracts::payments::PaymentCaptured;
use mercato_payments::domain::PaymentStatus;
use mercato_testkit::{TestBackend, backend_tests};

use crate::support::{TestApp, order_id, spawn_app_with};

backend_tests!(two_replicas_share_the_work_and_charge_each_order_once);

/// The provider calls an instance made, from its own metrics: (all, those that succeeded).
async fn provider_calls(payments: &TestApp, base: &str) -> (u64, u64) {
    let text = payments.metrics_at(base).await.expect("the instance's metrics");
    let mut calls = (0, 0);
    for line in text.lines() {
        let Some(labels) = line.strip_prefix("mercato_payments_provider_calls_total{") else {
            continue;
        };
        let (labels, value) = labels.split_once("} ").expect("a sample line");
        let value: u64 = value.trim().parse().expect("a whole count");
        calls.0 += value;
        if labels.contains(r#"result="ok""#) {
            calls.1 += value;
        }
    }
    calls
}

async fn two_replicas_share_the_work_and_charge_each_order_once(backend: TestBackend) {
    // One provider call at a time per instance, and tok_late holds its call for the sandbox's
    // late delay: while one instance waits on a call, the other due payments are the other
    // instance's to take, so both must work, however the bus splits the commands.
    let mut payments = spawn_app_with(backend, |tuning| {
        tuning.provider.concurrency = 1;
        tuning.late_delay_ms = 1_000;
        // Far beyond the late delay, so a slow machine never turns a late answer into a retry.
        tuning.provider.timeout_ms = 10_000;
    })
    .await;
    payments.start_replica().await;
    let flaky: Vec<String> = (0..4).map(|_| order_id()).collect();
    let late: Vec<String> = (0..4).map(|_| order_id()).collect();
    for order in &flaky {
        payments.charge(order, "cust-1", "tok_flaky").await;
    }
    for order in &late {
        payments.charge(order, "cust-1", "tok_late").await;
    }
    for order in flaky.iter().chain(&late) {
        payments.answer::<PaymentCaptured>(order).await;
    }
    for (order, calls) in flaky.iter().map(|o| (o, 3)).chain(late.iter().map(|o| (o, 1))) {
        assert_eq!(payments.answers(order).await, ["PaymentCaptured"], "{order}");
        assert_eq!(payments.charges_for(order).await.len(), 1, "{order}");
        let payment = payments.payment(order).await.unwrap();
        assert_eq!(payment.status, PaymentStatus::Captured);
        assert_eq!(
            payment.attempts, calls,
            "no call for {order} was made twice at once"
        );
    }

    let mut per_instance = Vec::new();
    for base in payments.instance_urls() {
        per_instance.push(provider_calls(&payments, &base).await);
    }
    assert_eq!(per_instance.len(), 2);
    assert!(
        per_instance.iter().all(|(calls, _)| *calls > 0),
        "an instance made no provider call: {per_instance:?}"
    );
    let succeeded: u64 = per_instance.iter().map(|(_, ok)| ok).sum();
    assert_eq!(succeeded, 8, "one successful charge per order: {per_instance:?}");
    let made: u64 = per_instance.iter().map(|(calls, _)| calls).sum();
    assert_eq!(made, 4 * 3 + 4, "every call counted once: {per_instance:?}");
}
