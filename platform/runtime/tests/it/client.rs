use axum::Router;
use axum::extract::State;
use axum::routing::get;
use mercato_runtime::client::ClientError;
use mercato_runtime::{ClientConfig, ServiceClient};
use serde_json::Value;

use crate::support::{Options, PATIENCE, TestApp, correlation_id, spawn_app, spawn_app_with};

/// Server A, whose `/relay` calls B's `/echo` and answers with what B saw.
async fn spawn_relay_to(b: &TestApp) -> TestApp {
    let client = ServiceClient::new(&b.base_url, &ClientConfig::default()).unwrap();
    let routes = Router::new().route("/relay", get(relay)).with_state(client);
    spawn_app_with(Options {
        routes,
        ..Options::default()
    })
    .await
}

async fn relay(State(b): State<ServiceClient>) -> axum::Json<Value> {
    let response = b.get("/echo").send().await.expect("B answers");
    axum::Json(response.json().await.expect("B's echo is JSON"))
}

#[tokio::test]
async fn service_client_carries_the_callers_correlation_id_to_the_next_service() {
    let b = spawn_app().await;
    let a = spawn_relay_to(&b).await;

    let response = a
        .get("/relay")
        .header("x-correlation-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(correlation_id(&response), "abc-123");
    let seen_by_b: Value = response.json().await.unwrap();
    assert_eq!(seen_by_b["header"], "abc-123", "{seen_by_b}");
    assert_eq!(seen_by_b["current"], "abc-123", "{seen_by_b}");
}

#[tokio::test]
async fn service_client_carries_the_generated_correlation_id_when_the_caller_sent_none() {
    let b = spawn_app().await;
    let a = spawn_relay_to(&b).await;

    let response = a.get("/relay").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let generated = correlation_id(&response);
    let seen_by_b: Value = response.json().await.unwrap();
    assert_eq!(seen_by_b["header"], generated, "{seen_by_b}");
}

#[tokio::test]
async fn service_client_outside_a_request_sends_no_correlation_id() {
    let b = spawn_app().await;
    let client = ServiceClient::new(&b.base_url, &ClientConfig::default()).unwrap();
    let response = client.get("/echo").send().await.unwrap();
    let echoed = correlation_id(&response);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["header"], echoed, "B generated its own id: {seen}");
}

#[tokio::test]
async fn service_client_gives_up_with_a_timeout_error_on_a_service_that_never_answers() {
    let b = spawn_app().await;
    let config = ClientConfig {
        timeout_ms: 200,
        ..ClientConfig::default()
    };
    let client = ServiceClient::new(&b.base_url, &config).unwrap();

    let outcome = tokio::time::timeout(PATIENCE, client.get("/never").send())
        .await
        .expect("the client gives up by itself instead of hanging");
    let error = outcome.expect_err("a call that never answers fails");
    assert!(error.is_timeout(), "{error:?}");
}

#[tokio::test]
async fn service_client_refuses_a_base_url_that_is_not_http() {
    let error = ServiceClient::new("ftp://catalog:8080", &ClientConfig::default()).unwrap_err();
    assert!(matches!(error, ClientError::BaseUrl(_)), "{error:?}");
}

#[tokio::test]
async fn service_client_joins_paths_to_a_base_url_with_a_trailing_slash() {
    let b = spawn_app().await;
    let client = ServiceClient::new(&format!("{}/", b.base_url), &ClientConfig::default()).unwrap();
    assert_eq!(client.base_url(), b.base_url);
    assert_eq!(client.get("/health").send().await.unwrap().status(), 200);
}
