//! The consumer side of payments' pact with the payment provider: the real provider client
//! against a provider that answers only what the committed pact says. Each interaction's
//! answer is given when the client's request matches the interaction's request (by the same
//! matcher the contracts use); any other request is recorded and fails the test. So the requests
//! payments really sends are the ones the official verifier replays against the sandbox.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use mercato_contracts::pact::{Pact, Request, match_request};
use mercato_payments::provider::ChargeRequest;
use mercato_payments::{ProviderClient, ProviderError};
use serde_json::Value;

use crate::provider::client;

fn provider_pact() -> Pact {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts");
    mercato_contracts::files::pacts(&dir)
        .expect("the committed pacts")
        .into_iter()
        .find(|p| p.consumer == "payments" && p.provider == "payment-sandbox")
        .expect("payments' pact with the payment provider")
}

#[derive(Default)]
struct Seen {
    /// Descriptions of the interactions that answered.
    answered: Vec<String>,
    /// Each request no interaction matched, with why each did not.
    unmatched: Vec<String>,
}

#[derive(Clone)]
struct Mock {
    pact: Arc<Pact>,
    seen: Arc<Mutex<Seen>>,
}

/// A provider on a loopback port that answers from the pact.
struct MockProvider {
    url: String,
    seen: Arc<Mutex<Seen>>,
    server: tokio::task::JoinHandle<()>,
}

impl MockProvider {
    async fn start(pact: Pact) -> Self {
        let mock = Mock {
            pact: Arc::new(pact),
            seen: Arc::default(),
        };
        let seen = Arc::clone(&mock.seen);
        let app = axum::Router::new().fallback(answer).with_state(mock);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, seen, server }
    }

    fn answered(&self) -> Vec<String> {
        self.seen.lock().unwrap().answered.clone()
    }

    fn unmatched(&self) -> Vec<String> {
        self.seen.lock().unwrap().unmatched.clone()
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    State(mock): State<Mock>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
    };
    let request = Request {
        method: method.as_str(),
        path: uri.path(),
        headers: &headers,
        body: &body,
    };
    let mut why = Vec::new();
    for interaction in &mock.pact.interactions {
        let mismatches = match_request(interaction, request);
        if mismatches.is_empty() {
            let description = interaction["description"].as_str().unwrap_or_default();
            mock.seen.lock().unwrap().answered.push(description.into());
            let response = &interaction["response"];
            let status = response["status"].as_u64().and_then(|s| u16::try_from(s).ok());
            let status = status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            return (status, axum::Json(response["body"]["content"].clone())).into_response();
        }
        why.push(format!(
            "{}: {}",
            interaction["description"],
            mismatches.join("; ")
        ));
    }
    let unmatched = format!(
        "{method} {uri} {body} matches no interaction ({})",
        why.join(" | ")
    );
    mock.seen.lock().unwrap().unmatched.push(unmatched.clone());
    // Not an answer the pact gives, so never one the client could take for the provider's.
    (StatusCode::NOT_IMPLEMENTED, unmatched).into_response()
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("the pact has no {what}"))
}

/// What payments makes of each answer the pact gives, called as the worker calls it.
async fn call(provider: &ProviderClient, interaction: &Value) {
    let request = &interaction["request"];
    let key = text(&request["headers"]["Idempotency-Key"][0], "idempotency key");
    let body = &request["body"]["content"];
    let response = &interaction["response"]["body"]["content"];
    let status = interaction["response"]["status"].as_u64();
    let description = text(&interaction["description"], "description");
    if request["path"] == "/v1/refunds" {
        let refund = provider
            .refund(text(&body["charge_id"], "charge id"), key, Some("corr-pact"))
            .await
            .unwrap_or_else(|e| panic!("{description}: {e}"));
        assert_eq!(refund.charge_id, response["charge_id"], "{description}");
        return;
    }
    let charge = ChargeRequest {
        idempotency_key: key,
        amount_minor: body["amount_minor"].as_i64().expect("an amount"),
        currency: text(&body["currency"], "currency"),
        card_token: text(&body["card_token"], "card"),
        correlation_id: Some("corr-pact"),
    };
    let outcome = provider.charge(&charge).await;
    match (status, outcome) {
        (Some(200), Ok(charge)) => assert_eq!(charge.id, response["id"], "{description}"),
        (Some(402), Err(ProviderError::Declined { code })) => {
            assert_eq!(code, response["error"]["code"], "{description}");
        }
        (Some(503), Err(e)) => assert!(e.is_transient(), "{description}: {e:?}"),
        (status, outcome) => panic!("{description}: {status:?} taken as {outcome:?}"),
    }
}

#[tokio::test]
async fn the_provider_client_sends_each_request_of_its_pact_and_reads_each_answer() {
    let pact = provider_pact();
    let interactions = pact.interactions.clone();
    let mock = MockProvider::start(pact).await;
    for interaction in &interactions {
        // A client per interaction, so one's failure never opens the breaker on the next.
        call(&client(&mock.url, 2_000), interaction).await;
    }
    assert_eq!(mock.unmatched(), Vec::<String>::new());
    let described: Vec<String> = interactions
        .iter()
        .map(|i| text(&i["description"], "description").to_owned())
        .collect();
    assert_eq!(
        mock.answered(),
        described,
        "each interaction answered once, in turn"
    );
    assert!(described.iter().any(|d| d.contains("refund")), "{described:?}");
}

#[tokio::test]
async fn a_request_the_pact_does_not_have_is_caught_and_named() {
    let mock = MockProvider::start(provider_pact()).await;
    let provider = client(&mock.url, 2_000);
    let charge = ChargeRequest {
        idempotency_key: "order-contract-tok_visa",
        amount_minor: 2499,
        currency: "EUR",
        card_token: "tok_visa",
        correlation_id: None,
    };
    let refused = provider.charge(&charge).await.unwrap_err();
    assert!(matches!(refused, ProviderError::Unavailable(_)), "{refused:?}");
    let unmatched = mock.unmatched();
    assert_eq!(unmatched.len(), 1, "{unmatched:?}");
    assert!(
        unmatched[0].contains("$.amount_minor: expected 2500, got 2499"),
        "{unmatched:?}"
    );
    assert!(mock.answered().is_empty());
}
