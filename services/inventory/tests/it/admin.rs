//! `PUT /api/products/{sku}/stock` and `/price`: admins only, validated, and announced with
//! `ProductChanged`.

use mercato_contracts::inventory::ProductChanged;
use mercato_contracts::money::{Currency, Money};
use mercato_testkit::service::send_body;
use mercato_testkit::{TestBackend, backend_tests};
use serde_json::{Value, json};

use crate::support::{TestApp, expect_problem, far_future, invalid_fields, spawn_app, spawn_for_an_order};

backend_tests!(spawn_app =>
    an_admin_sets_the_stock_and_the_change_is_published,
    an_admin_sets_the_price_and_the_change_is_published,
    only_an_admin_may_change_stock_or_prices,
    bad_stock_bodies_are_refused_and_change_nothing,
    bad_price_bodies_name_each_field,
    changing_an_unknown_product_is_not_found;
    stock_cannot_fall_below_what_orders_hold,
);

async fn an_admin_sets_the_stock_and_the_change_is_published(app: TestApp) {
    let product = app.set_stock("mug-001", 7).await;
    assert_eq!(product["sku"], "MUG-001");
    assert_eq!(product["available"], 7);
    assert_eq!(app.available("MUG-001").await, 7);
    assert_eq!(app.stock("MUG-001").await, (7, 0));

    let mut answers = app.answers().await;
    let envelope = answers
        .wait_for("ProductChanged for MUG-001", |e| e.is::<ProductChanged>())
        .await;
    assert_eq!(envelope.stream_id, "MUG-001");
    assert_eq!(envelope.source, "inventory");
    let changed: ProductChanged = envelope.decode().unwrap();
    assert_eq!(
        changed,
        ProductChanged {
            sku: "MUG-001".into(),
            name: "Enamel mug".into(),
            price: Money::new(1200, Currency::EUR),
            available: 7,
        }
    );
}

async fn an_admin_sets_the_price_and_the_change_is_published(app: TestApp) {
    let body = json!({"price": {"amount_minor": 1450, "currency": "USD"}});
    let response = app.admin_put("/api/products/TEE-BLK-M/price", &body).await;
    assert_eq!(response.status(), 200);
    let product: Value = response.json().await.unwrap();
    assert_eq!(product["price"], json!({"amount_minor": 1450, "currency": "USD"}));
    assert_eq!(app.product("TEE-BLK-M").await["price"], product["price"]);

    let mut answers = app.answers().await;
    let changed: ProductChanged = answers
        .wait_for("ProductChanged for TEE-BLK-M", |e| e.stream_id == "TEE-BLK-M")
        .await
        .decode()
        .unwrap();
    assert_eq!(changed.price.amount_minor, 1450);
    assert_eq!(changed.price.currency, "USD");
    assert_eq!(changed.available, 80);
    assert_eq!(app.written("TEE-BLK-M").await, ["ProductChanged"]);
}

async fn only_an_admin_may_change_stock_or_prices(app: TestApp) {
    let customer = app.customer_token();
    let cases = [
        ("/api/products/MUG-001/stock", json!({"quantity": 1})),
        (
            "/api/products/MUG-001/price",
            json!({"price": {"amount_minor": 1, "currency": "EUR"}}),
        ),
    ];
    for (path, body) in &cases {
        let anonymous = expect_problem(app.put(path, None, body).await, 401).await;
        assert_eq!(anonymous["type"], "urn:mercato:problem:unauthorized");
        let forged = expect_problem(app.put(path, Some("not.a.token"), body).await, 401).await;
        assert_eq!(forged["type"], "urn:mercato:problem:unauthorized");
        let forbidden = expect_problem(app.put(path, Some(&customer), body).await, 403).await;
        assert_eq!(forbidden["type"], "urn:mercato:problem:forbidden");
        // The role is checked before the body: a customer learns nothing from a bad one.
        expect_problem(
            app.put(path, Some(&customer), &json!({"nonsense": true})).await,
            403,
        )
        .await;
    }
    let mug = app.product("MUG-001").await;
    assert_eq!(mug["available"], 100);
    assert_eq!(mug["price"]["amount_minor"], 1200);
    assert!(app.written("MUG-001").await.is_empty(), "nothing was published");
}

async fn bad_stock_bodies_are_refused_and_change_nothing(app: TestApp) {
    let admin = app.admin_token();
    let path = "/api/products/MUG-001/stock";
    for body in [
        json!({"quantity": -1}),
        json!({"quantity": "ten"}),
        json!({"quantity": 1.5}),
        json!({}),
        json!({"quantity": 2_000_000_000}),
    ] {
        let problem = expect_problem(app.put(path, Some(&admin), &body).await, 422).await;
        assert_eq!(invalid_fields(&problem), ["quantity"], "{body}");
    }
    let extra = expect_problem(
        app.put(path, Some(&admin), &json!({"quantity": 3, "on_hand": 3}))
            .await,
        422,
    )
    .await;
    assert_eq!(extra["type"], "urn:mercato:problem:validation-error");
    let malformed = send_body(
        app.http.put(app.url(path)).bearer_auth(&admin),
        "application/json",
        "{\"quantity\": ",
    )
    .await;
    expect_problem(malformed, 400).await;
    assert_eq!(app.stock("MUG-001").await, (100, 0));
    assert!(app.written("MUG-001").await.is_empty());
}

async fn bad_price_bodies_name_each_field(app: TestApp) {
    let admin = app.admin_token();
    let path = "/api/products/MUG-001/price";
    let cases = [
        (
            json!({"price": {"amount_minor": -5, "currency": "EUR"}}),
            vec!["price.amount_minor"],
        ),
        (
            json!({"price": {"amount_minor": 5, "currency": "eur"}}),
            vec!["price.currency"],
        ),
        (
            json!({"price": {"amount_minor": 5, "currency": "EURO"}}),
            vec!["price.currency"],
        ),
        (
            json!({"price": {"amount_minor": -5, "currency": "€"}}),
            vec!["price.currency", "price.amount_minor"],
        ),
        (json!({"price": {"amount_minor": 5}}), vec!["price.currency"]),
        (
            json!({"amount_minor": 5, "currency": "EUR"}),
            vec!["amount_minor"],
        ),
    ];
    for (body, fields) in cases {
        let problem = expect_problem(app.put(path, Some(&admin), &body).await, 422).await;
        assert_eq!(invalid_fields(&problem), fields, "{body}");
    }
    assert_eq!(app.product("MUG-001").await["price"]["amount_minor"], 1200);
}

async fn stock_cannot_fall_below_what_orders_hold(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    app.reserve(&order, 1, &[("NOTE-A5", 30)], far_future()).await;
    answers.wait_for("StockReserved", |e| e.stream_id == order).await;
    assert_eq!(app.available("NOTE-A5").await, 120);

    let problem = expect_problem(
        app.admin_put("/api/products/NOTE-A5/stock", &json!({"quantity": 29}))
            .await,
        422,
    )
    .await;
    assert_eq!(invalid_fields(&problem), ["quantity"]);
    assert!(problem["detail"].as_str().unwrap().contains("30"), "{problem}");
    assert_eq!(app.stock("NOTE-A5").await, (150, 30));

    let exactly = app.set_stock("NOTE-A5", 30).await;
    assert_eq!(exactly["available"], 0);
    assert_eq!(app.stock("NOTE-A5").await, (30, 30));
}

async fn changing_an_unknown_product_is_not_found(app: TestApp) {
    for (path, body) in [
        ("/api/products/NOPE-1/stock", json!({"quantity": 1})),
        (
            "/api/products/NOPE-1/price",
            json!({"price": {"amount_minor": 1, "currency": "EUR"}}),
        ),
    ] {
        expect_problem(app.admin_put(path, &body).await, 404).await;
    }
    assert!(app.written("NOPE-1").await.is_empty());
}
