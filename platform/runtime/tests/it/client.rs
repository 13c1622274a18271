use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderMap, StatusCode};
use mercato_runtime::client::ClientError;
use mercato_runtime::config::{BreakerSettings, BulkheadSettings, RetrySettings};
use mercato_runtime::resilience::{CircuitState, Deadline, ResilienceError};
use mercato_runtime::{ClientConfig, ClientMetrics, Problem, Registry, ServiceClient};
use mercato_testkit::eventually;
use mercato_testkit::metrics::Exposition;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::{Options, PATIENCE, TestApp, correlation_id, spawn_app, spawn_app_with};

fn client_of(base_url: &str, config: &ClientConfig) -> ServiceClient {
    ServiceClient::new("peer", base_url, config, &ClientMetrics::default()).unwrap()
}

/// Server A, whose `/relay` calls B's `/echo` and answers with what B saw.
async fn spawn_relay_to(b: &TestApp) -> TestApp {
    let client = client_of(&b.base_url, &ClientConfig::default());
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

    let response = a.get_with_header("/relay", "x-correlation-id", "abc-123").await;
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
    let client = client_of(&b.base_url, &ClientConfig::default());
    let response = client.get("/echo").send().await.unwrap();
    let echoed = correlation_id(&response);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["header"], echoed, "B generated its own id: {seen}");
}

#[tokio::test]
async fn service_client_gives_up_with_a_timeout_error_on_a_service_that_never_answers() {
    // A plain peer: a Mercato service would cut the call itself at the deadline the client sends,
    // and its 504 could arrive before the client's own timeout fires.
    let b = Peer::spawn(StatusCode::OK).await;
    let config = ClientConfig {
        timeout_ms: 200,
        retry: RetrySettings {
            max_attempts: 1,
            ..RetrySettings::default()
        },
        ..ClientConfig::default()
    };
    let client = client_of(&b.base_url, &config);

    let outcome = tokio::time::timeout(PATIENCE, client.get("/stall").send())
        .await
        .expect("the client gives up by itself instead of hanging");
    let error = outcome.expect_err("a call that never answers fails");
    assert!(matches!(error, ResilienceError::TimedOut(_)), "{error:?}");
}

#[tokio::test]
async fn service_client_refuses_a_base_url_that_is_not_http() {
    let error = ServiceClient::new(
        "catalog",
        "ftp://catalog:8080",
        &ClientConfig::default(),
        &ClientMetrics::default(),
    )
    .unwrap_err();
    assert!(matches!(error, ClientError::BaseUrl(_)), "{error:?}");
}

#[tokio::test]
async fn service_client_refuses_an_invalid_setting_by_its_key() {
    let mut config = ClientConfig::default();
    config.retry.budget_window_secs = 0;
    let error = ServiceClient::new("b", "http://b", &config, &ClientMetrics::default()).unwrap_err();
    assert!(
        matches!(&error, ClientError::Setting(s) if s.key == "retry.budget_window_secs"),
        "{error:?}"
    );
}

#[tokio::test]
async fn service_client_joins_paths_to_a_base_url_with_a_trailing_slash() {
    let b = spawn_app().await;
    let client = client_of(&format!("{}/", b.base_url), &ClientConfig::default());
    assert_eq!(client.base_url(), b.base_url);
    assert_eq!(client.get("/health").send().await.unwrap().status(), 200);
}

/// A plain server (no Mercato runtime, so it never cuts a request itself) that counts its hits,
/// records the deadline each request carried, answers `/status` with a status the test sets, and
/// never answers `/stall`.
struct Peer {
    base_url: String,
    seen: Seen,
    task: JoinHandle<()>,
}

#[derive(Clone, Default)]
struct Seen {
    hits: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    deadlines: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    fn hit(&self, headers: &HeaderMap) {
        self.hits.fetch_add(1, Ordering::SeqCst);
        if let Some(value) = headers.get("x-request-deadline-ms") {
            let value = value.to_str().unwrap_or("not text").to_owned();
            self.deadlines.lock().unwrap().push(value);
        }
    }
}

impl Peer {
    async fn spawn(status: StatusCode) -> Self {
        let seen = Seen::default();
        seen.status.store(status.as_u16(), Ordering::SeqCst);
        let routes = Router::new()
            .route("/status", any(answer_status))
            .route("/stall", any(stall))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, routes).await.unwrap();
        });
        Self { base_url, seen, task }
    }

    fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }

    fn answer(&self, status: StatusCode) {
        self.seen.status.store(status.as_u16(), Ordering::SeqCst);
    }

    /// The milliseconds left that each request said it had.
    fn deadlines(&self) -> Vec<u64> {
        let seen = self.seen.deadlines.lock().unwrap();
        seen.iter().map(|v| v.parse().expect("milliseconds")).collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer_status(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
    seen.hit(&headers);
    StatusCode::from_u16(seen.status.load(Ordering::SeqCst)).unwrap()
}

async fn stall(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
    seen.hit(&headers);
    std::future::pending().await
}

fn quick_retries(max_attempts: u32) -> RetrySettings {
    RetrySettings {
        max_attempts,
        backoff_base_ms: 1,
        backoff_cap_ms: 2,
        ..RetrySettings::default()
    }
}

#[tokio::test]
async fn a_downstream_call_is_cut_when_the_callers_deadline_passes() {
    let peer = Peer::spawn(StatusCode::OK).await;
    let client = client_of(&peer.base_url, &ClientConfig::default());

    let started = Instant::now();
    let deadline = Deadline::after(Duration::from_millis(300));
    let result = tokio::time::timeout(PATIENCE, deadline.scope(client.get("/stall").send()))
        .await
        .expect("the call ends by itself");
    let elapsed = started.elapsed();

    // Cut by the deadline, not by the call's own 10 s timeout (that would be `TimedOut`).
    assert!(
        matches!(result, Err(ResilienceError::DeadlineExceeded)),
        "{result:?}"
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    let left = peer.deadlines();
    assert_eq!(left.len(), 1, "one attempt, not retried past the deadline");
    assert!((1..=300).contains(&left[0]), "the server saw {left:?} ms left");
}

/// Server A, whose `/relay-stall` calls the peer's `/stall` and answers what the call ended with.
async fn spawn_relay_to_stall(peer: &Peer) -> TestApp {
    let client = client_of(&peer.base_url, &ClientConfig::default());
    let routes = Router::new()
        .route("/relay-stall", get(relay_stall))
        .with_state(client);
    spawn_app_with(Options {
        routes,
        ..Options::default()
    })
    .await
}

async fn relay_stall(State(peer): State<ServiceClient>) -> Response {
    match peer.get("/stall").send().await {
        Ok(response) => response.status().into_response(),
        Err(ResilienceError::DeadlineExceeded) => Problem::deadline_exceeded().into_response(),
        Err(error) => Problem::unavailable(error.to_string(), 1).into_response(),
    }
}

#[tokio::test]
async fn a_services_downstream_call_inherits_the_deadline_its_caller_sent() {
    let peer = Peer::spawn(StatusCode::OK).await;
    let a = spawn_relay_to_stall(&peer).await;

    a.expect_deadline_exceeded("/relay-stall", 400).await;
    let left = peer.deadlines();
    assert_eq!(left.len(), 1);
    assert!((1..=400).contains(&left[0]), "the peer saw {left:?} ms left");
}

fn breaker_config() -> ClientConfig {
    ClientConfig {
        circuit_breaker: BreakerSettings {
            sliding_window_size: 4,
            minimum_number_of_calls: 4,
            wait_duration_ms: 200,
            permitted_calls_in_half_open: 1,
            ..BreakerSettings::default()
        },
        retry: quick_retries(1),
        ..ClientConfig::default()
    }
}

fn render(registry: &Registry) -> String {
    mercato_runtime::metrics::render(registry)
}

#[tokio::test]
async fn the_breaker_opens_against_a_failing_service_fails_fast_and_closes_after_a_good_probe() {
    let peer = Peer::spawn(StatusCode::INTERNAL_SERVER_ERROR).await;
    let mut registry = Registry::default();
    let metrics = ClientMetrics::register(&mut registry);
    let client = ServiceClient::new("peer", &peer.base_url, &breaker_config(), &metrics).unwrap();

    for _ in 0..4 {
        let response = client.get("/status").send().await.unwrap();
        assert_eq!(response.status(), 500);
    }
    assert_eq!(client.breaker_state(), CircuitState::Open);
    assert!(render(&registry).contains(r#"circuit_breaker_state{name="peer",state="open"} 1"#));

    // Failing fast is failing without a call: the service sees no fifth request.
    let refused = client.get("/status").send().await.unwrap_err();
    assert!(
        matches!(refused, ResilienceError::CircuitOpen { .. }),
        "{refused:?}"
    );
    assert!(refused.retry_after().is_some());
    assert_eq!(peer.hits(), 4, "nothing reached the failing service");

    peer.answer(StatusCode::OK);
    eventually(PATIENCE, "a probe once the wait is over", || async {
        client.get("/status").send().await.ok()
    })
    .await;
    assert_eq!(client.breaker_state(), CircuitState::Closed);
    assert_eq!(peer.hits(), 5, "only the probe reached the service");

    let metrics = Exposition::parse(&render(&registry));
    for state in ["open", "half_open", "closed"] {
        let transitions = metrics.value(
            "circuit_breaker_transitions_total",
            &[("name", "peer"), ("state", state)],
        );
        assert_eq!(transitions, Some(1.0), "transitions into {state}");
    }
    let calls = |outcome| {
        metrics.value(
            "service_client_calls_total",
            &[("peer", "peer"), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("error_answer"), Some(4.0));
    assert!(calls("circuit_open").is_some());
}

#[tokio::test]
async fn retries_of_a_get_stay_within_the_budget() {
    let peer = Peer::spawn(StatusCode::SERVICE_UNAVAILABLE).await;
    // 20 % of requests plus one retry per second over 10 s: at most 10 + 30 / 5 retries.
    let config = ClientConfig {
        retry: RetrySettings {
            budget_percent: 20,
            budget_min_per_sec: 1,
            budget_window_secs: 10,
            ..quick_retries(3)
        },
        // Kept closed, so that every attempt reaches the server.
        circuit_breaker: BreakerSettings {
            sliding_window_size: 100,
            minimum_number_of_calls: 100,
            ..BreakerSettings::default()
        },
        ..ClientConfig::default()
    };
    let client = client_of(&peer.base_url, &config);

    for _ in 0..30 {
        // Once the budget is spent, the last answer comes back as it is.
        let response = client.get("/status").send().await.unwrap();
        assert_eq!(response.status(), 503);
    }
    let retries = peer.hits() - 30;
    assert!(retries <= 10 + 6, "{retries} retries exceed the budget");
    assert!(retries >= 10, "the reserve was used: {retries} retries");
}

#[tokio::test]
async fn a_post_is_repeated_only_when_it_carries_an_idempotency_key() {
    let peer = Peer::spawn(StatusCode::SERVICE_UNAVAILABLE).await;
    let config = ClientConfig {
        retry: quick_retries(3),
        ..ClientConfig::default()
    };
    let client = client_of(&peer.base_url, &config);

    let response = client.post("/status").json(&[1, 2]).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(peer.hits(), 1, "a POST without a key is sent once");

    let response = client
        .post("/status")
        .idempotency_key("order-42")
        .json(&[1, 2])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(peer.hits(), 1 + 3, "a keyed POST is retried up to max_attempts");
}

#[tokio::test]
async fn the_bulkhead_refuses_a_call_beyond_its_limit_at_once() {
    let peer = Peer::spawn(StatusCode::OK).await;
    let config = ClientConfig {
        bulkhead: BulkheadSettings {
            max_concurrent: 1,
            max_queued: 0,
            ..BulkheadSettings::default()
        },
        ..ClientConfig::default()
    };
    let client = client_of(&peer.base_url, &config);
    let busy = client.clone();
    let stalled = tokio::spawn(async move { busy.get("/stall").send().await.map(|r| r.status()) });
    eventually(PATIENCE, "the first call reached the peer", || async {
        (peer.hits() == 1).then_some(())
    })
    .await;

    // Refused while the first call is still in flight, which it would never leave.
    let refused = client.get("/status").send().await.unwrap_err();
    assert!(
        matches!(refused, ResilienceError::BulkheadFull { .. }),
        "{refused:?}"
    );
    assert_eq!(peer.hits(), 1);
    stalled.abort();
}
