//! `mercato loadgen` against the whole system: every order followed to its end with the long
//! poll, the saga's phases from the server's times, and refusals past the backlog bound (`503`
//! through the gateway, with `Retry-After`) counted apart from errors.

use mercato::loadgen::{LoadgenArgs, measure};
use mercato_testkit::{TestBackend, backend_tests, eventually};
use serde_json::json;

use crate::support::{PATIENCE, Started, System, fresh, metrics_of, problem, sample, started, unique_email};
use reqwest::Method;

backend_tests!(started =>
    loadgen_follows_every_order_to_its_end_and_reports_the_sagas_phases;
    past_the_backlog_bound_orders_are_refused_through_the_gateway_and_counted_apart,
);

fn args(system: &System, rate: f64, card: &str) -> LoadgenArgs {
    LoadgenArgs {
        target: system.gateway.clone(),
        rate,
        duration_secs: 1,
        customers: 2,
        card: card.to_owned(),
        admin_email: None,
        admin_password: None,
        max_in_flight: 64,
        order_timeout_secs: 60,
        wait_ms: 5_000,
    }
}

async fn loadgen_follows_every_order_to_its_end_and_reports_the_sagas_phases((_fixture, system): Started) {
    let report = measure(args(&system, 8.0, "tok_visa"))
        .await
        .expect("the run completes");
    assert_eq!(report.offered, 8);
    assert_eq!(report.confirmed.len(), 8, "{report}");
    assert_eq!(
        (
            report.shed,
            report.unavailable,
            report.rate_limited,
            report.errors,
            report.stuck
        ),
        (0, 0, 0, 0, 0),
        "{report}"
    );
    for phase in [
        &report.phases.reserve,
        &report.phases.charge,
        &report.phases.confirm,
        &report.phases.total,
    ] {
        assert_eq!(phase.len(), 8, "every confirmed order has its phases: {report}");
    }
    let p = &report.phases;
    assert!(p.total.percentile(100.0) >= p.reserve.percentile(100.0));
    let text = report.to_string();
    assert!(text.contains("saga phases, from the server's times"), "{text}");
    assert!(text.contains("rate limited, 429     none"), "{text}");
    assert!(report.cpu.is_some(), "the load generator measures its own CPU");
    system.stop().await;
}

/// One order whose payment hangs holds the only place (`tok_hang`: pending until the payment
/// timeout, seconds after the last arrival); every other order is refused.
async fn past_the_backlog_bound_orders_are_refused_through_the_gateway_and_counted_apart(
    backend: TestBackend,
) {
    let (_fixture, mut config) = fresh(backend).await;
    config.orders.max_orders_in_flight = 1;
    let system = System::start(config).await;
    let report = measure(args(&system, 8.0, "tok_hang"))
        .await
        .expect("the run completes");
    assert_eq!(report.offered, 8);
    assert_eq!(
        (
            report.shed,
            report.unavailable,
            report.cancelled,
            report.confirmed.len(),
            report.errors,
            report.stuck
        ),
        (7, 0, 1, 0, 0, 0),
        "{report}"
    );

    let orders = system.urls["orders"].clone();
    eventually(PATIENCE, "the backlog to empty", || async {
        let metrics = metrics_of(&system.http, &orders).await?;
        (sample(&metrics, "orders_in_flight")? == 0.0).then_some(())
    })
    .await;
    let token = system.customer(&unique_email()).await;
    let order = |card: &str| {
        system
            .http
            .post(system.url("/api/orders"))
            .bearer_auth(&token)
            .json(&json!({
                "items": [{"sku": "MUG-001", "quantity": 1}],
                "payment": {"card_token": card},
                "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
            }))
            .send()
    };
    assert_eq!(order("tok_hang").await.unwrap().status(), 201);
    // More refusals than the gateway's breaker needs to judge (20 calls): they are answers, not
    // failures, so orders stays in the gateway's rotation.
    for _ in 0..25 {
        let refused = order("tok_visa").await.unwrap();
        assert!(
            refused.headers().contains_key("retry-after"),
            "the gateway passes Retry-After on"
        );
        let refusal = problem(refused, 503).await;
        assert_eq!(refusal["type"], "urn:mercato:problem:backlog-full");
    }
    let mine = system.send(Method::GET, "/api/orders", &token).await;
    assert_eq!(
        mine.status(),
        200,
        "refusals did not take orders out of the gateway's rotation"
    );
    let listed: serde_json::Value = mine.json().await.unwrap();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "nothing refused was created"
    );
    system.stop().await;
}
