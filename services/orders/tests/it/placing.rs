//! Placing, reading, listing and cancelling orders through the HTTP API.

use mercato_contracts::orders::ReleaseStock;
use mercato_testkit::json::field_of_each;
use mercato_testkit::problem::expect_problem;
use mercato_testkit::{TestBackend, backend_tests};
use serde_json::Value;

use crate::support::{order_body, spawn_app, spawn_for_a_customer};

backend_tests!(
    a_placed_order_answers_201_pending_with_its_location_and_total,
    the_same_key_and_body_give_the_same_order_and_another_body_is_422,
    another_customers_order_is_404,
    orders_are_listed_newest_first,
    a_customer_cancels_a_pending_order_and_the_stock_is_released,
    a_confirmed_order_cannot_be_cancelled,
);

async fn a_placed_order_answers_201_pending_with_its_location_and_total(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, token) = app.customer();
    let response = app
        .place(&token, &order_body(&[("MUG-001", 3)], "tok_visa"), None)
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/api/orders/{}", body["id"].as_str().unwrap()));
    assert_eq!(body["status"], "pending");
    assert_eq!(
        body["total"],
        serde_json::json!({"amount_minor": 3_750, "currency": "EUR"})
    );
    assert_eq!(body["items"][0]["sku"], "MUG-001");
    assert_eq!(body["items"][0]["quantity"], 3);

    let read: Value = app.get(&token, &location).await.json().await.unwrap();
    assert_eq!(read["id"], body["id"]);
    assert_eq!(read["status"], "pending");
}

async fn the_same_key_and_body_give_the_same_order_and_another_body_is_422(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, token) = app.customer();
    let body = order_body(&[("MUG-001", 1)], "tok_visa");
    let first: Value = app
        .place(&token, &body, Some("key-1"))
        .await
        .json()
        .await
        .unwrap();
    let replay = app.place(&token, &body, Some("key-1")).await;
    assert_eq!(replay.status(), 201);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"], "a replay is the same order");

    let other = order_body(&[("MUG-001", 2)], "tok_visa");
    let problem = expect_problem(app.place(&token, &other, Some("key-1")).await, 422).await;
    assert_eq!(problem["type"], "urn:mercato:problem:idempotency-key-reused");

    let list: Value = app.get(&token, "/api/orders").await.json().await.unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "one order for one key"
    );
}

async fn another_customers_order_is_404(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, owner) = app.customer();
    let (_, stranger) = app.customer();
    let order = app.placed(&owner, &[("MUG-001", 1)], "tok_visa").await;
    expect_problem(app.get(&stranger, &format!("/api/orders/{order}")).await, 404).await;
    expect_problem(
        app.post(&stranger, &format!("/api/orders/{order}/cancel")).await,
        404,
    )
    .await;
    expect_problem(app.get(&owner, "/api/orders/no-such-order").await, 404).await;
}

async fn orders_are_listed_newest_first(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, token) = app.customer();
    let (_, other) = app.customer();
    let first = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    let second = app.placed(&token, &[("TEE-BLK-M", 1)], "tok_visa").await;
    app.placed(&other, &[("MUG-001", 1)], "tok_visa").await;
    let list: Value = app.get(&token, "/api/orders").await.json().await.unwrap();
    assert_eq!(
        field_of_each(&list["items"], "id"),
        [second.as_str(), first.as_str()]
    );
    assert_eq!(list["next_page_token"], Value::Null);
}

async fn a_customer_cancels_a_pending_order_and_the_stock_is_released(backend: TestBackend) {
    let (app, mut commands, (_, token)) = spawn_for_a_customer(backend).await;
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    app.stock_reserved(&mut commands, &order).await;
    commands
        .wait_for("ChargePayment", |e| {
            e.stream_id == order && e.event_type == "ChargePayment"
        })
        .await;
    let response = app.post(&token, &format!("/api/orders/{order}/cancel")).await;
    assert_eq!(response.status(), 200);
    let view = app.wait_for_status(&token, &order, "cancelled").await;
    assert_eq!(view["cancel_reason"], "customer_cancelled");
    commands.first::<ReleaseStock>(&order).await;
}

async fn a_confirmed_order_cannot_be_cancelled(backend: TestBackend) {
    let (app, mut commands, (_, token)) = spawn_for_a_customer(backend).await;
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    app.stock_reserved(&mut commands, &order).await;
    app.payment_captured(&mut commands, &order).await;
    app.wait_for_status(&token, &order, "confirmed").await;
    expect_problem(
        app.post(&token, &format!("/api/orders/{order}/cancel")).await,
        409,
    )
    .await;
    // Shipping is an admin's step; a customer may not take it.
    let admin = app.admin_token();
    let shipped = app.post(&admin, &format!("/api/orders/{order}/ship")).await;
    assert_eq!(shipped.status(), 200, "an admin ships a confirmed order");
}
