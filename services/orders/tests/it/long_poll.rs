//! `GET /api/orders/{id}?wait_for_change_from=…&wait_ms=…`: at once when the order already
//! differs, woken by the change while waiting, the same state when the wait ends, and `422`
//! naming a bad parameter.

use std::time::Duration;

use mercato_testkit::problem::{expect_problem, invalid_fields};
use mercato_testkit::{PATIENCE, TestBackend, backend_tests, eventually};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::{TestApp, spawn_app, spawn_app_with, spawn_for_a_customer};

backend_tests!(
    a_long_poll_answers_at_once_when_the_order_already_differs,
    a_waiting_long_poll_is_answered_when_the_order_changes,
    a_long_poll_answers_the_same_state_when_the_wait_ends,
    a_long_poll_for_a_status_ends_with_the_latest_version_of_the_order,
    bad_long_poll_parameters_are_named,
    a_long_poll_on_another_customers_order_is_404,
);

/// Far longer than any answer that does not wait, far shorter than the longest wait: an answer
/// inside it did not sit out the wait.
const WELL_BEFORE_THE_WAIT_ENDS: Duration = Duration::from_secs(15);

async fn long_poll(app: &TestApp, token: &str, order: &str, query: &str) -> reqwest::Response {
    app.get(token, &format!("/api/orders/{order}?{query}")).await
}

async fn a_long_poll_answers_at_once_when_the_order_already_differs(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, token) = app.customer();
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    for query in [
        "wait_for_change_from=confirmed&wait_ms=30000",
        "wait_for_change_from=0&wait_ms=30000",
    ] {
        let answer = tokio::time::timeout(WELL_BEFORE_THE_WAIT_ENDS, long_poll(&app, &token, &order, query))
            .await
            .expect("an order that already differs is answered at once");
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], "pending");
        assert!(body["timeline"]["placed_at"].is_string(), "{body}");
    }
}

async fn a_waiting_long_poll_is_answered_when_the_order_changes(backend: TestBackend) {
    let (app, mut commands, (_, token)) = spawn_for_a_customer(backend).await;
    let by_version = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    let by_status = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    let mut charging = Vec::new();
    for order in [&by_version, &by_status] {
        app.stock_reserved(&mut commands, order).await;
        // Nothing more happens to the order until the test answers for payments.
        let charging_now = |body: &Value| body["payment"]["status"] == "pending";
        charging.push(app.wait_for(&token, order, "to be charged", charging_now).await);
    }
    let polls = [
        (
            &by_version,
            format!("wait_for_change_from={}", charging[0]["version"]),
        ),
        (&by_status, "wait_for_change_from=pending".to_owned()),
    ]
    .map(|(order, from)| {
        let request = app
            .http
            .get(app.url(&format!("/api/orders/{order}?{from}&wait_ms=30000")))
            .bearer_auth(&token)
            .send();
        tokio::spawn(request)
    });
    eventually(PATIENCE, "both long polls to wait on their orders", || async {
        (app.metric("orders_watched").await == Some(2.0)).then_some(())
    })
    .await;
    assert!(
        polls.iter().all(|p| !p.is_finished()),
        "an unchanged order is not answered"
    );

    for order in [&by_version, &by_status] {
        app.payment_captured(&mut commands, order).await;
    }
    for (poll, before) in polls.into_iter().zip(&charging) {
        let answer = tokio::time::timeout(WELL_BEFORE_THE_WAIT_ENDS, poll)
            .await
            .expect("the change ends the wait")
            .unwrap()
            .expect("the service answers");
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        assert!(body["version"].as_i64() > before["version"].as_i64());
        assert_eq!(body["status"], "confirmed");
        let timeline = &body["timeline"];
        let times: Vec<OffsetDateTime> = ["placed_at", "reserved_at", "paid_at", "confirmed_at"]
            .iter()
            .map(|phase| {
                let at = timeline[phase]
                    .as_str()
                    .unwrap_or_else(|| panic!("{phase} in {timeline}"));
                OffsetDateTime::parse(at, &Rfc3339).expect("an RFC 3339 time")
            })
            .collect();
        assert!(times.is_sorted(), "the phases in the saga's order: {timeline}");
    }
    eventually(PATIENCE, "the watches to be given up", || async {
        (app.metric("orders_watched").await == Some(0.0)).then_some(())
    })
    .await;
}

async fn a_long_poll_answers_the_same_state_when_the_wait_ends(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, token) = app.customer();
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    let before: Value = app
        .get(&token, &format!("/api/orders/{order}"))
        .await
        .json()
        .await
        .unwrap();
    let answer = long_poll(&app, &token, &order, "wait_for_change_from=pending&wait_ms=200").await;
    assert_eq!(answer.status(), 200);
    let after: Value = answer.json().await.unwrap();
    assert_eq!(after["status"], "pending");
    assert_eq!(after["version"], before["version"]);
    assert_eq!(app.metric("orders_watched").await, Some(0.0));
}

/// A client waiting for the status to leave `pending` is not woken by changes that keep it, but
/// the answer when the wait ends is the order as it is then, not as the wait first read it.
async fn a_long_poll_for_a_status_ends_with_the_latest_version_of_the_order(backend: TestBackend) {
    // No payment answer comes: the order stays pending, charging, past the wait.
    let app = spawn_app_with(backend, |saga| {
        saga.payment_timeout_ms = 60_000;
        saga.reservation_ttl_ms = 120_000;
    })
    .await;
    let mut commands = app.commands().await;
    let (_, token) = app.customer();
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    let poll = tokio::spawn(
        app.http
            .get(app.url(&format!(
                "/api/orders/{order}?wait_for_change_from=pending&wait_ms=5000"
            )))
            .bearer_auth(&token)
            .send(),
    );
    eventually(PATIENCE, "the long poll to wait on the order", || async {
        (app.metric("orders_watched").await == Some(1.0)).then_some(())
    })
    .await;
    app.stock_reserved(&mut commands, &order).await;
    let charging_now = |body: &Value| body["payment"]["status"] == "pending";
    let charging = app.wait_for(&token, &order, "to be charged", charging_now).await;

    let answer = poll.await.unwrap().expect("the service answers");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["version"], charging["version"], "{body}");
    assert_eq!(body["payment"]["status"], "pending", "{body}");
}

async fn bad_long_poll_parameters_are_named(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, token) = app.customer();
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    for (query, field) in [
        ("wait_for_change_from=pending&wait_ms=-1", "wait_ms"),
        ("wait_for_change_from=pending&wait_ms=30001", "wait_ms"),
        ("wait_for_change_from=pending&wait_ms=soon", "wait_ms"),
        ("wait_for_change_from=lost&wait_ms=100", "wait_for_change_from"),
        ("wait_ms=100", "wait_for_change_from"),
    ] {
        let problem = expect_problem(long_poll(&app, &token, &order, query).await, 422).await;
        assert_eq!(invalid_fields(&problem), [field], "{query}");
    }
    let twice = "wait_for_change_from=pending&wait_ms=1&wait_ms=2";
    expect_problem(long_poll(&app, &token, &order, twice).await, 400).await;
}

async fn a_long_poll_on_another_customers_order_is_404(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, owner) = app.customer();
    let (_, other) = app.customer();
    let order = app.placed(&owner, &[("MUG-001", 1)], "tok_visa").await;
    let answer = long_poll(&app, &other, &order, "wait_for_change_from=pending&wait_ms=30000").await;
    expect_problem(answer, 404).await;
}
