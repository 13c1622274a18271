//! The checkout through the gateway, on both settings: every order ends confirmed or cancelled
//! with a reason, nothing is charged twice, and stock is never oversold.

use std::time::Duration;

use mercato_testkit::problem::invalid_fields;
use mercato_testkit::service::send_body;
use mercato_testkit::{backend_tests, eventually};
use serde_json::{Value, json};

use crate::support::{PATIENCE, Started, System, declare_oversized_body, problem, started, unique_email};
use reqwest::Method;

backend_tests!(started =>
    an_order_is_confirmed_the_stock_drops_and_a_confirmation_arrives,
    a_declined_card_cancels_the_order_and_puts_the_stock_back,
    an_order_for_more_than_there_is_is_cancelled_out_of_stock,
    a_hanging_provider_times_out_and_a_late_charge_is_refunded,
    fifty_concurrent_orders_for_ten_units_confirm_exactly_ten,
    placing_is_idempotent_per_key_and_orders_are_private,
    bad_orders_are_problems_naming_the_field,
    admins_ship_and_deliver_and_customers_may_not,
);

const SKU: &str = "MUG-001";

pub fn order_body(sku: &str, quantity: i64, card: &str) -> Value {
    json!({
        "items": [{"sku": sku, "quantity": quantity}],
        "payment": {"card_token": card},
        "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    })
}

async fn place(system: &System, token: &str, body: &Value) -> reqwest::Response {
    system.send_json(Method::POST, "/api/orders", token, body).await
}

/// Places an order that must be accepted, and returns it.
async fn placed(system: &System, token: &str, body: &Value) -> Value {
    let response = place(system, token, body).await;
    assert_eq!(response.status(), 201, "placing an order");
    response.json().await.unwrap()
}

/// Places an order and waits until it leaves `pending`; returns it then.
pub async fn placed_and_settled(system: &System, token: &str, body: &Value) -> Value {
    let order = placed(system, token, body).await;
    settled(system, token, order["id"].as_str().unwrap()).await
}

/// Polls the order until it leaves `pending`.
async fn settled(system: &System, token: &str, id: &str) -> Value {
    eventually(PATIENCE, "the order to settle", || async {
        let order = system.try_get_json(&format!("/api/orders/{id}"), token).await?;
        (order["status"] != "pending").then_some(order)
    })
    .await
}

async fn available(system: &System, sku: &str) -> i64 {
    let product: Value = system.get_public(&format!("/api/products/{sku}")).await;
    product["available"].as_i64().unwrap()
}

/// Eventually `available` equals `expected` (releases travel over the bus).
async fn available_becomes(system: &System, sku: &str, expected: i64) {
    eventually(
        PATIENCE,
        &format!("{sku} to have {expected} available"),
        || async { (available(system, sku).await == expected).then_some(()) },
    )
    .await;
}

async fn an_order_is_confirmed_the_stock_drops_and_a_confirmation_arrives((_fixture, system): Started) {
    let token = system.customer(&unique_email()).await;
    let products: Value = system.get_public("/api/products").await;
    assert!(
        products["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["sku"] == SKU),
        "{products}"
    );
    let before = available(&system, SKU).await;

    let response = place(&system, &token, &order_body(SKU, 2, "tok_visa")).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "pending");
    assert_eq!(location, format!("/api/orders/{}", order["id"].as_str().unwrap()));
    // Read your own write: the order is there right after the POST.
    let read = system.send(Method::GET, &location, &token).await;
    assert_eq!(read.status(), 200);

    let done = settled(&system, &token, order["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_eq!(done["payment"]["status"], "captured");
    assert_eq!(
        done["total"]["amount_minor"],
        order["items"][0]["unit_price"]["amount_minor"].as_i64().unwrap() * 2
    );
    available_becomes(&system, SKU, before - 2).await;

    let mail = eventually(PATIENCE, "the confirmation in the mailbox", || async {
        let page = system.try_get_json("/api/notifications", &token).await?;
        page["items"]
            .as_array()?
            .iter()
            .find(|m| m["kind"] == "order_confirmed")
            .cloned()
    })
    .await;
    assert!(
        mail["body"]
            .as_str()
            .unwrap()
            .contains(order["id"].as_str().unwrap()),
        "{mail}"
    );
    let history: Value = system.get_json("/api/orders", &token).await;
    assert_eq!(history["items"][0]["id"], order["id"]);
    system.stop().await;
}

async fn a_declined_card_cancels_the_order_and_puts_the_stock_back((_fixture, system): Started) {
    let token = system.customer(&unique_email()).await;
    let before = available(&system, SKU).await;
    let done = placed_and_settled(&system, &token, &order_body(SKU, 1, "tok_decline")).await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["cancel_reason"], "payment_declined");
    assert_eq!(done["payment"]["status"], "failed");
    available_becomes(&system, SKU, before).await;
    system.stop().await;
}

async fn an_order_for_more_than_there_is_is_cancelled_out_of_stock((_fixture, system): Started) {
    let admin = system.admin().await;
    system.set_stock(&admin, SKU, 1).await;
    let token = system.customer(&unique_email()).await;
    let done = placed_and_settled(&system, &token, &order_body(SKU, 2, "tok_visa")).await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["cancel_reason"], "out_of_stock");
    assert_eq!(available(&system, SKU).await, 1);
    system.stop().await;
}

async fn a_hanging_provider_times_out_and_a_late_charge_is_refunded((_fixture, system): Started) {
    let token = system.customer(&unique_email()).await;
    let before = available(&system, SKU).await;

    let hung = placed(&system, &token, &order_body(SKU, 1, "tok_hang")).await;
    let late = placed(&system, &token, &order_body(SKU, 1, "tok_late")).await;
    for order in [&hung, &late] {
        let done = settled(&system, &token, order["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "cancelled", "{done}");
        assert_eq!(done["cancel_reason"], "payment_timeout", "{done}");
    }
    available_becomes(&system, SKU, before).await;
    // The late charge lands after the saga gave up, and payments refunds it.
    let late_id = late["id"].as_str().unwrap();
    let payment = eventually(
        Duration::from_secs(30),
        "the late charge to be refunded",
        || async {
            let p = system
                .try_get_json(&format!("/api/payments/{late_id}"), &token)
                .await?;
            (p["status"] == "refunded").then_some(p)
        },
    )
    .await;
    assert_eq!(payment["order_id"], late_id);
    let charges = system.sandbox_charges(&format!("charge-{late_id}")).await;
    assert_eq!(charges.len(), 1, "charged exactly once: {charges:?}");
    assert_eq!(charges[0]["refunded"], true, "{charges:?}");
    system.stop().await;
}

async fn fifty_concurrent_orders_for_ten_units_confirm_exactly_ten((_fixture, system): Started) {
    let admin = system.admin().await;
    system.set_stock(&admin, SKU, 10).await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(system.customer(&unique_email()).await);
    }
    let mut placing = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (http, url, token) = (
            system.http.clone(),
            system.url("/api/orders"),
            tokens[i % tokens.len()].clone(),
        );
        placing.spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(&token)
                .json(&order_body(SKU, 1, "tok_visa"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let order: Value = r.json().await.unwrap();
            (token, order["id"].as_str().unwrap().to_owned())
        });
    }
    let mut orders = Vec::new();
    while let Some(placed) = placing.join_next().await {
        orders.push(placed.unwrap());
    }
    let (mut confirmed, mut cancelled) = (0, 0);
    for (token, id) in &orders {
        let done = settled(&system, token, id).await;
        match done["status"].as_str().unwrap() {
            "confirmed" => confirmed += 1,
            "cancelled" => {
                assert_eq!(done["cancel_reason"], "out_of_stock", "{done}");
                cancelled += 1;
            }
            other => panic!("order ended {other}"),
        }
    }
    assert_eq!((confirmed, cancelled), (10, 40));
    assert_eq!(available(&system, SKU).await, 0);
    system.stop().await;
}

async fn placing_is_idempotent_per_key_and_orders_are_private((_fixture, system): Started) {
    let token = system.customer(&unique_email()).await;
    let body = order_body(SKU, 1, "tok_visa");
    let with_key = |body: &Value| {
        system
            .http
            .post(system.url("/api/orders"))
            .bearer_auth(&token)
            .header("idempotency-key", "order-key-1")
            .json(body)
            .send()
    };
    let first: Value = with_key(&body).await.unwrap().json().await.unwrap();
    let again = with_key(&body).await.unwrap();
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        first["id"], again["id"],
        "the same key and body return the same order"
    );
    let other = with_key(&order_body(SKU, 2, "tok_visa")).await.unwrap();
    problem(other, 422).await;
    let history: Value = system.get_json("/api/orders", &token).await;
    assert_eq!(history["items"].as_array().unwrap().len(), 1);

    let stranger = system.customer(&unique_email()).await;
    let id = first["id"].as_str().unwrap();
    // Someone else's order is not there for them, to read or to cancel.
    for (method, path) in [
        (Method::GET, format!("/api/orders/{id}")),
        (Method::POST, format!("/api/orders/{id}/cancel")),
    ] {
        problem(system.send(method, &path, &stranger).await, 404).await;
    }
    system.stop().await;
}

async fn bad_orders_are_problems_naming_the_field((_fixture, system): Started) {
    let token = system.customer(&unique_email()).await;
    let cases = [
        (
            json!({"items": [], "payment": {"card_token": "tok_visa"}, "shipping_address": order_body(SKU, 1, "x")["shipping_address"]}),
            "items",
        ),
        (order_body(SKU, -1, "tok_visa"), "items[0].quantity"),
        (order_body(SKU, 0, "tok_visa"), "items[0].quantity"),
        (order_body("NO-SUCH-SKU", 1, "tok_visa"), "items[0].sku"),
        (order_body("bad sku", 1, "tok_visa"), "items[0].sku"),
        (order_body(SKU, 1, ""), "payment.card_token"),
        (json!({"items": [{"sku": SKU, "quantity": 1}]}), "payment"),
    ];
    for (body, field) in cases {
        let response = place(&system, &token, &body).await;
        let p = problem(response, 422).await;
        assert!(
            invalid_fields(&p).contains(&field),
            "{body} should name {field}: {p}"
        );
    }
    let malformed = send_body(
        system.http.post(system.url("/api/orders")).bearer_auth(&token),
        "application/json",
        "{",
    )
    .await;
    problem(malformed, 400).await;
    let (status, body) =
        declare_oversized_body(&system.gateway, "/api/orders", Some(&token), 2 * 1024 * 1024).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload-too-large"), "{body}");
    let anonymous = system
        .send_anonymous(Method::POST, "/api/orders", Some(&order_body(SKU, 1, "tok_visa")))
        .await;
    problem(anonymous, 401).await;
    system.stop().await;
}

async fn admins_ship_and_deliver_and_customers_may_not((_fixture, system): Started) {
    let admin = system.admin().await;
    let token = system.customer(&unique_email()).await;
    let order = placed(&system, &token, &order_body(SKU, 1, "tok_visa")).await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(settled(&system, &token, id).await["status"], "confirmed");
    // Too late for the customer to cancel, and not theirs to ship.
    for (action, status) in [("cancel", 409), ("ship", 403)] {
        let refused = system
            .send(Method::POST, &format!("/api/orders/{id}/{action}"), &token)
            .await;
        problem(refused, status).await;
    }
    let shipped = system
        .send(Method::POST, &format!("/api/orders/{id}/ship"), &admin)
        .await;
    assert_eq!(shipped.status(), 200);
    let delivered: Value = system
        .send(Method::POST, &format!("/api/orders/{id}/deliver"), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(delivered["status"], "delivered");
    let mine: Value = system.get_json(&format!("/api/orders/{id}"), &token).await;
    assert_eq!(mine["status"], "delivered");
    system.stop().await;
}
