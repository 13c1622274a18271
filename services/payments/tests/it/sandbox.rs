//! The sandbox over HTTP: the test cards and the idempotency rules.

use mercato_testkit::json::field_of_each;
use mercato_testkit::service::text_answer;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{PATIENCE, Sandbox};

fn body(card: &str) -> Value {
    json!({"amount_minor": 1999, "currency": "EUR", "card_token": card})
}

/// A Visa charge of `amount_minor` in `currency`, either of which may be malformed.
fn visa(amount_minor: i64, currency: &str) -> Value {
    json!({"amount_minor": amount_minor, "currency": currency, "card_token": "tok_visa"})
}

async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("a JSON error");
    body["error"]["code"].as_str().expect("an error code").to_owned()
}

#[tokio::test]
async fn a_visa_card_is_charged() {
    let sandbox = Sandbox::start(8_000).await;
    let response = sandbox.post_charge(Some("visa-1"), &body("tok_visa")).await;
    assert_eq!(response.status(), 200);
    let charge: Value = response.json().await.unwrap();
    assert!(charge["id"].as_str().unwrap().starts_with("ch_"));
    assert_eq!(charge["status"], "succeeded");
    assert_eq!(charge["amount_minor"], 1999);
    assert_eq!(charge["currency"], "EUR");
    assert_eq!(charge["refunded"], false);
    assert_eq!(sandbox.charges("visa-1").await.len(), 1);
}

#[tokio::test]
async fn a_declined_card_answers_402_and_charges_nothing() {
    let sandbox = Sandbox::start(8_000).await;
    let response = sandbox.post_charge(Some("decline-1"), &body("tok_decline")).await;
    assert_eq!(error_code(response, 402).await, "card_declined");
    let again = sandbox.post_charge(Some("decline-1"), &body("tok_decline")).await;
    assert_eq!(error_code(again, 402).await, "card_declined");
    assert!(sandbox.charges("decline-1").await.is_empty());
}

#[tokio::test]
async fn a_flaky_card_fails_twice_per_key_then_charges_once() {
    let sandbox = Sandbox::start(8_000).await;
    for _ in 0..2 {
        let response = sandbox.post_charge(Some("flaky-1"), &body("tok_flaky")).await;
        assert_eq!(response.status(), 503);
    }
    let third = sandbox.post_charge(Some("flaky-1"), &body("tok_flaky")).await;
    assert_eq!(third.status(), 200);
    let fourth = sandbox.post_charge(Some("flaky-1"), &body("tok_flaky")).await;
    assert_eq!(fourth.status(), 200);
    let (a, b): (Value, Value) = (third.json().await.unwrap(), fourth.json().await.unwrap());
    assert_eq!(a["id"], b["id"]);
    assert_eq!(sandbox.charges("flaky-1").await.len(), 1);
    let other = sandbox.post_charge(Some("flaky-2"), &body("tok_flaky")).await;
    assert_eq!(other.status(), 503, "another key starts its own failures");
}

#[tokio::test]
async fn a_hanging_card_never_answers_and_the_sandbox_keeps_serving() {
    let sandbox = Sandbox::start(8_000).await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let result = impatient
        .post(format!("{}/v1/charges", sandbox.url))
        .header("Idempotency-Key", "hang-1")
        .json(&body("tok_hang"))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert!(sandbox.charges("hang-1").await.is_empty());
    let visa = sandbox
        .post_charge(Some("visa-after-hang"), &body("tok_visa"))
        .await;
    assert_eq!(visa.status(), 200);
}

#[tokio::test]
async fn a_late_card_is_pending_until_the_delay_then_succeeds() {
    let sandbox = Sandbox::start(600).await;
    let late = body("tok_late");
    let request = sandbox.post_charge(Some("late-1"), &late);
    let watch = async {
        let charges = mercato_testkit::eventually(PATIENCE, "the late charge to exist", || async {
            let charges = sandbox.charges("late-1").await;
            (!charges.is_empty()).then_some(charges)
        })
        .await;
        assert_eq!(charges[0]["status"], "pending");
    };
    let (response, ()) = tokio::join!(request, watch);
    assert_eq!(response.status(), 200);
    let charge: Value = response.json().await.unwrap();
    assert_eq!(charge["status"], "succeeded");
    let listed = sandbox.charges("late-1").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "succeeded");
}

#[tokio::test]
async fn an_unknown_card_or_a_bad_body_is_refused_with_400() {
    let sandbox = Sandbox::start(8_000).await;
    let unknown = sandbox.post_charge(Some("k"), &body("tok_mystery")).await;
    assert_eq!(error_code(unknown, 400).await, "invalid_card");
    let negative = sandbox.post_charge(Some("k2"), &visa(-1, "EUR")).await;
    assert_eq!(error_code(negative, 400).await, "invalid_amount");
    let currency = sandbox.post_charge(Some("k3"), &visa(1, "euro")).await;
    assert_eq!(error_code(currency, 400).await, "invalid_currency");
    let shapeless = sandbox.post_charge(Some("k4"), &json!({"amount": 1})).await;
    assert_eq!(error_code(shapeless, 400).await, "invalid_request");
}

#[tokio::test]
async fn a_charge_needs_an_idempotency_key() {
    let sandbox = Sandbox::start(8_000).await;
    let response = sandbox.post_charge(None, &body("tok_visa")).await;
    assert_eq!(error_code(response, 400).await, "missing_idempotency_key");
    let refund = sandbox
        .http
        .post(format!("{}/v1/refunds", sandbox.url))
        .json(&json!({"charge_id": "ch_x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(refund, 400).await, "missing_idempotency_key");
}

#[tokio::test]
async fn the_same_key_returns_the_same_charge_and_another_body_conflicts() {
    let sandbox = Sandbox::start(8_000).await;
    let first = sandbox.charged("same", &body("tok_visa")).await;
    let replay = sandbox.charged("same", &body("tok_visa")).await;
    assert_eq!(first["id"], replay["id"]);
    let other = sandbox.post_charge(Some("same"), &visa(1, "EUR")).await;
    assert_eq!(error_code(other, 409).await, "idempotency_key_reused");
    assert_eq!(sandbox.charges("same").await.len(), 1);
}

#[tokio::test]
async fn a_charge_is_refunded_once_and_shows_it() {
    let sandbox = Sandbox::start(8_000).await;
    let charge = sandbox.charged("to-refund", &body("tok_visa")).await;
    let id = charge["id"].as_str().unwrap();
    let first = sandbox.post_refund("refund-1", id).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert!(first["id"].as_str().unwrap().starts_with("re_"));
    assert_eq!(first["charge_id"], id);
    assert_eq!(first["amount_minor"], 1999);
    let again: Value = sandbox.post_refund("refund-1", id).await.json().await.unwrap();
    let other_key: Value = sandbox.post_refund("refund-2", id).await.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(other_key["id"], first["id"]);
    let shown: Value = sandbox.charge(id).await.json().await.unwrap();
    assert_eq!(shown["refunded"], true);
    assert_eq!(shown["refund_id"], first["id"]);
}

#[tokio::test]
async fn unknown_charges_are_404_and_a_refund_key_is_bound_to_its_charge() {
    let sandbox = Sandbox::start(8_000).await;
    assert_eq!(
        error_code(sandbox.charge("ch_nope").await, 404).await,
        "resource_missing"
    );
    assert_eq!(
        error_code(sandbox.post_refund("r", "ch_nope").await, 404).await,
        "resource_missing"
    );
    let a = sandbox.charged("a", &body("tok_visa")).await;
    let b = sandbox.charged("b", &body("tok_visa")).await;
    assert_eq!(
        sandbox.post_refund("r", a["id"].as_str().unwrap()).await.status(),
        200
    );
    let reused = sandbox.post_refund("r", b["id"].as_str().unwrap()).await;
    assert_eq!(error_code(reused, 409).await, "idempotency_key_reused");
}

#[tokio::test]
async fn the_sandbox_lists_its_newest_charges_and_serves_operations_routes() {
    let sandbox = Sandbox::start(8_000).await;
    for key in ["l1", "l2", "l3"] {
        sandbox.post_charge(Some(key), &body("tok_visa")).await;
    }
    let response = sandbox
        .http
        .get(format!("{}/v1/charges?limit=2", sandbox.url))
        .send()
        .await
        .unwrap();
    let list: Value = response.json().await.unwrap();
    assert_eq!(field_of_each(&list["data"], "idempotency_key"), ["l3", "l2"]);
    for path in ["/health", "/ready"] {
        let status = sandbox
            .http
            .get(format!("{}{path}", sandbox.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
    let metrics = text_answer(sandbox.http.get(format!("{}/metrics", sandbox.url))).await;
    assert!(metrics.contains(r#"mercato_sandbox_charge_requests_total{outcome="succeeded"} 3"#));
}
