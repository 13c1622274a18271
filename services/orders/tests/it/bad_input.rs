//! Bad orders: every invalid field named, products the catalogue does not know, a caller with no
//! profile yet, no token; nothing is placed.

use mercato_testkit::problem::{expect_problem, expect_problem_of, invalid_fields};
use mercato_testkit::{TestBackend, backend_tests};
use serde_json::{Value, json};

use crate::support::{order_body, spawn_app};

backend_tests!(
    invalid_fields_are_each_named,
    an_unknown_product_is_named_by_its_line,
    a_caller_without_a_profile_is_told_so,
    without_a_token_placing_is_401,
    a_bad_idempotency_key_is_refused,
);

async fn nothing_placed(app: &crate::support::TestApp, token: &str) {
    let list: Value = app.get(token, "/api/orders").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]), "no order was placed");
}

async fn invalid_fields_are_each_named(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, token) = app.customer();
    let problem = expect_problem(app.place(&token, &order_body(&[], "tok_visa"), None).await, 422).await;
    assert_eq!(invalid_fields(&problem), ["items"]);

    let mut body = order_body(&[("MUG-001", 0), ("not a sku", 1)], "");
    body["shipping_address"]["country"] = json!("Germany");
    let problem = expect_problem(app.place(&token, &body, None).await, 422).await;
    let fields = invalid_fields(&problem);
    for field in [
        "items[0].quantity",
        "items[1].sku",
        "payment.card_token",
        "shipping_address.country",
    ] {
        assert!(fields.contains(&field), "{field} is named in {fields:?}");
    }

    let mut unknown_field = order_body(&[("MUG-001", 1)], "tok_visa");
    unknown_field["total"] = json!({"amount_minor": 1, "currency": "EUR"});
    expect_problem(app.place(&token, &unknown_field, None).await, 422).await;
    nothing_placed(&app, &token).await;
}

async fn an_unknown_product_is_named_by_its_line(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, token) = app.customer();
    let body = order_body(&[("MUG-001", 1), ("NO-SUCH-THING", 1)], "tok_visa");
    let problem = expect_problem(app.place(&token, &body, None).await, 422).await;
    assert_eq!(invalid_fields(&problem), ["items[1].sku"]);
    nothing_placed(&app, &token).await;
}

async fn a_caller_without_a_profile_is_told_so(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let token = app.stranger_token();
    let body = order_body(&[("MUG-001", 1)], "tok_visa");
    expect_problem_of(app.place(&token, &body, None).await, 422, "no-customer-profile").await;
}

async fn without_a_token_placing_is_401(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let response = app
        .http
        .post(app.url("/api/orders"))
        .json(&order_body(&[("MUG-001", 1)], "tok_visa"))
        .send()
        .await
        .unwrap();
    expect_problem(response, 401).await;
}

async fn a_bad_idempotency_key_is_refused(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let (_, token) = app.customer();
    let body = order_body(&[("MUG-001", 1)], "tok_visa");
    let long = "k".repeat(129);
    let problem = expect_problem(app.place(&token, &body, Some(&long)).await, 422).await;
    assert_eq!(invalid_fields(&problem), ["Idempotency-Key"]);
    nothing_placed(&app, &token).await;
}
