//! `GET /api/payments/{order_id}`, readiness and metrics.

use mercato_testkit::ready::Readiness;
use mercato_testkit::{TestBackend, backend_tests, eventually};
use serde_json::{Value, json};

use crate::support::{PATIENCE, expect_problem, order_id, spawn_app};

backend_tests!(
    only_the_orders_customer_reads_its_payment,
    an_admin_reads_the_payment_with_each_provider_call,
    payments_reports_readiness_and_charge_metrics,
);

async fn only_the_orders_customer_reads_its_payment(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let order = payments.captured_order("cust-owner").await;

    let owner = payments.issuer().token("cust-owner", &["customer"]);
    let response = payments.get_payment(&order, Some(&owner)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["order_id"], order);
    assert_eq!(body["status"], "captured");
    assert_eq!(body["amount"], json!({"amount_minor": 4250, "currency": "EUR"}));
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(body["updated_at"].as_str().is_some());
    assert!(
        body.get("card_token").is_none(),
        "no card data leaves the service: {body}"
    );

    let stranger = payments.issuer().token("cust-stranger", &["customer"]);
    expect_problem(payments.get_payment(&order, Some(&stranger)).await, 404).await;
    expect_problem(payments.get_payment(&order_id(), Some(&owner)).await, 404).await;
    let anonymous = payments.get_payment(&order, None).await;
    assert!(anonymous.headers().contains_key("www-authenticate"));
    expect_problem(anonymous, 401).await;
    expect_problem(payments.get_payment(&order, Some("not-a-jwt")).await, 401).await;
}

async fn an_admin_reads_the_payment_with_each_provider_call(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    let order = order_id();
    payments.charge(&order, "cust-1", "tok_decline").await;
    payments
        .payment_until(&order, "the decline", |p| {
            p.attempts == 1 && p.last_error.is_some()
        })
        .await;
    let admin_path = format!("/admin/payments/{order}");

    let admin = payments.issuer().token("admin-1", &["admin"]);
    let response = payments.get(&admin_path, Some(&admin)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "failed");
    let calls = body["provider_attempts"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{body}");
    assert_eq!(calls[0]["step"], "charge");
    assert_eq!(calls[0]["attempt"], 1);
    assert_eq!(calls[0]["outcome"], "declined");
    assert!(calls[0]["at"].as_str().unwrap().ends_with('Z'));
    assert!(calls[0]["error"].as_str().unwrap().contains("card_declined"));

    let customer = payments.issuer().token("cust-1", &["customer"]);
    expect_problem(payments.get(&admin_path, Some(&customer)).await, 403).await;
}

async fn payments_reports_readiness_and_charge_metrics(backend: TestBackend) {
    let mut payments = spawn_app(backend).await;
    payments.captured_order("cust-1").await;

    let ready = Readiness::of(payments.http.get(payments.url("/ready")).send().await.unwrap()).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.check_names(), ["database", "bus"]);
    // Each check names its engine, for the console's view of the system's dependencies.
    let engines = match backend {
        TestBackend::Sqlite => ["sqlite", "embedded"],
        TestBackend::Postgres => ["postgres", "nats"],
    };
    assert_eq!(ready.check("database")["engine"], engines[0]);
    assert_eq!(ready.check("bus")["engine"], engines[1]);

    let expected = [
        r#"mercato_payments_charges_total{outcome="captured"} 1"#,
        r#"mercato_payments_provider_calls_total{operation="charge",result="ok"} 1"#,
        r#"mercato_payments_provider_call_duration_seconds_count{operation="charge"} 1"#,
        // PaymentCaptured, the only event of this order, went out through the outbox.
        "mercato_outbox_published_total 1",
        "mercato_outbox_backlog 0",
        r#"mercato_consumer_messages_total{subscriber="payments-on-orders",outcome="applied"} 1"#,
    ];
    // The relay counts a publish once it has marked the row, a moment after the answer arrived.
    eventually(PATIENCE, "the payment's metrics", || async {
        let text = payments.metrics_at(&payments.url("")).await?;
        expected
            .iter()
            .all(|sample| text.lines().any(|l| l == *sample))
            .then_some(())
    })
    .await;
}
