//! Past `[orders] max_orders_in_flight` a new order is refused before anything is written for
//! it, and the orders already accepted all finish; the backlog gauge follows them down.

use mercato_testkit::problem::expect_problem_of;
use mercato_testkit::{PATIENCE, TestBackend, backend_tests, eventually};
use serde_json::Value;

use crate::support::{order_body, spawn_app_with};

backend_tests!(orders_past_the_bound_are_refused_and_every_accepted_one_is_confirmed);

const BOUND: u64 = 2;

async fn orders_past_the_bound_are_refused_and_every_accepted_one_is_confirmed(backend: TestBackend) {
    let app = spawn_app_with(backend, |saga| saga.max_orders_in_flight = BOUND).await;
    let mut commands = app.commands().await;
    let (_, token) = app.customer();
    let mut accepted = Vec::new();
    for _ in 0..BOUND {
        accepted.push(app.placed(&token, &[("MUG-001", 1)], "tok_visa").await);
    }
    eventually(
        PATIENCE,
        "the backlog gauge to count the accepted orders",
        || async { (app.metric("orders_in_flight").await == Some(2.0)).then_some(()) },
    )
    .await;

    for _ in 0..3 {
        let refused = app
            .place(&token, &order_body(&[("MUG-001", 1)], "tok_visa"), None)
            .await;
        let retry_after = refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            retry_after.is_some_and(|s| s >= 1),
            "a refusal says when to retry"
        );
        expect_problem_of(refused, 503, "backlog-full").await;
    }
    // A refused order left nothing behind: the customer has the accepted orders only.
    let list: Value = app.get(&token, "/api/orders").await.json().await.unwrap();
    let mut listed: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = accepted.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(app.metric("orders_refused_total").await >= Some(3.0));

    for order in &accepted {
        app.stock_reserved(&mut commands, order).await;
        app.payment_captured(&mut commands, order).await;
    }
    for order in &accepted {
        app.wait_for_status(&token, order, "confirmed").await;
    }
    eventually(PATIENCE, "the backlog gauge to come back to zero", || async {
        (app.metric("orders_in_flight").await == Some(0.0)).then_some(())
    })
    .await;
    app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
}
