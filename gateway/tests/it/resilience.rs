use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::RETRY_AFTER;
use mercato_gateway::{RouteAuth, RouteConfig};
use mercato_runtime::Problem;
use mercato_testkit::eventually;

use crate::support::{
    PATIENCE, TestGateway, breaker_name, closed_url, echo, echoed, expect_problem_of, seen_header, serve,
    small_breaker, spawn_gateway_over, spawn_gateway_with,
};

/// An upstream that answers its next `failures` requests with `status`, then echoes like the
/// standard upstreams.
struct Flaky {
    url: String,
    hits: Arc<AtomicUsize>,
    failures_left: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct FlakyState {
    status: StatusCode,
    hits: Arc<AtomicUsize>,
    failures_left: Arc<AtomicUsize>,
}

impl Flaky {
    async fn spawn(status: u16, failures: usize) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let failures_left = Arc::new(AtomicUsize::new(failures));
        let state = FlakyState {
            status: StatusCode::from_u16(status).unwrap(),
            hits: Arc::clone(&hits),
            failures_left: Arc::clone(&failures_left),
        };
        let url = serve(Router::new().fallback(flaky).with_state(state)).await;
        Self {
            url,
            hits,
            failures_left,
        }
    }

    /// An upstream that fails every request with `status` until healed.
    async fn failing(status: u16) -> Self {
        Self::spawn(status, usize::MAX).await
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn heal(&self) {
        self.failures_left.store(0, Ordering::SeqCst);
    }
}

async fn flaky(State(state): State<FlakyState>, request: Request) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let failing = state
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return (state.status, "upstream failure").into_response();
    }
    echo("flaky", request).await
}

/// A gateway whose `echo` upstream is `flaky`.
async fn gateway_before(flaky: &Flaky, adjust: impl FnOnce(&mut mercato_gateway::Config)) -> TestGateway {
    spawn_gateway_over(vec![flaky.url.clone()], adjust).await
}

/// An upstream failing with `status` before a gateway whose breaker judges four calls and, once
/// open, waits `wait_ms` before a probe.
async fn failing_behind_a_small_breaker(status: u16, wait_ms: u64) -> (Flaky, TestGateway) {
    let upstream = Flaky::failing(status).await;
    let gateway = gateway_before(&upstream, |config| {
        config.gateway.circuit_breaker = small_breaker(wait_ms);
    })
    .await;
    (upstream, gateway)
}

#[tokio::test]
async fn a_failing_upstream_opens_its_breaker_and_a_probe_closes_it_again() {
    let (upstream, gateway) = failing_behind_a_small_breaker(500, 500).await;

    // The upstream's own answer is passed on.
    gateway.expect_status("/api/echo/items", 500, 4).await;
    assert_eq!(upstream.hits(), 4);

    // Open: refused at once, without contacting the upstream.
    for _ in 0..5 {
        let response = gateway.get("/api/echo/items").send().await.unwrap();
        assert_eq!(response.headers()["retry-after"], "1", "500 ms, rounded up");
        let body = expect_problem_of(response, 503, "unavailable").await;
        assert!(body["detail"].as_str().unwrap().contains("echo"), "{body}");
        assert_eq!(upstream.hits(), 4, "refused without a call upstream");
    }
    // Refused POSTs do not reach it either.
    let response = gateway.post("/api/echo/orders").body("{}").send().await.unwrap();
    expect_problem_of(response, 503, "unavailable").await;
    assert_eq!(upstream.hits(), 4, "an open breaker sends nothing upstream");
    let name = breaker_name(&upstream.url);
    gateway.expect_breaker(&name, "open").await;
    assert_eq!(gateway.breaker_transitions(&name, "open").await, 1.0);

    upstream.heal();
    eventually(PATIENCE, "a probe to get through and succeed", || async {
        let response = gateway.get("/api/echo/items").send().await.unwrap();
        (response.status() == 200).then_some(())
    })
    .await;
    let hits = upstream.hits();
    assert_eq!(hits, 5, "one probe was let through");
    for _ in 0..3 {
        echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;
    }
    assert_eq!(upstream.hits(), hits + 3, "traffic flows again");
    gateway.expect_breaker(&name, "closed").await;
}

#[tokio::test]
async fn client_errors_do_not_open_the_breaker() {
    let (upstream, gateway) = failing_behind_a_small_breaker(404, 60_000).await;

    gateway.expect_status("/api/echo/missing", 404, 8).await;
    assert_eq!(upstream.hits(), 8);
}

/// A gateway (breaker judging four calls) before an upstream that refuses every request with a
/// `503` problem of type `slug` and `Retry-After: 1`, counting them; and the breaker's name.
async fn gateway_before_refusals(slug: &'static str) -> (TestGateway, Arc<AtomicUsize>, String) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let refuse = move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, "Refused by the upstream")
                .with_header(RETRY_AFTER, "1")
                .into_response()
        }
    };
    let url = serve(Router::new().fallback(refuse)).await;
    let name = breaker_name(&url);
    let gateway = spawn_gateway_over(vec![url], |config| {
        config.gateway.circuit_breaker = small_breaker(60_000);
    })
    .await;
    (gateway, hits, name)
}

/// The upstream got `calls` requests and the breaker `name` is in `state`.
async fn expect_calls_and_breaker(
    gateway: &TestGateway,
    hits: &AtomicUsize,
    calls: usize,
    name: &str,
    state: &str,
) {
    assert_eq!(
        hits.load(Ordering::SeqCst),
        calls,
        "requests that reached the upstream"
    );
    gateway.expect_breaker(name, state).await;
}

#[tokio::test]
async fn an_orders_backlog_full_refusal_is_passed_on_and_never_opens_the_breaker() {
    let (gateway, hits, name) = gateway_before_refusals("backlog-full").await;

    // Twice the calls the breaker judges: all of them reach the upstream.
    for _ in 0..8 {
        let response = gateway.post("/api/echo/orders").body("{}").send().await.unwrap();
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let body = expect_problem_of(response, 503, "backlog-full").await;
        assert_eq!(
            body["title"], "Refused by the upstream",
            "the upstream's own body: {body}"
        );
    }
    expect_calls_and_breaker(&gateway, &hits, 8, &name, "closed").await;
}

#[tokio::test]
async fn any_other_503_is_a_failure_even_with_retry_after() {
    let (gateway, hits, name) = gateway_before_refusals("unavailable").await;

    for _ in 0..4 {
        let response = gateway.post("/api/echo/orders").body("{}").send().await.unwrap();
        let body = expect_problem_of(response, 503, "unavailable").await;
        assert_eq!(body["title"], "Refused by the upstream", "passed on: {body}");
    }
    // The breaker judged four failures and opened: the gateway refuses on its own now.
    let response = gateway.post("/api/echo/orders").body("{}").send().await.unwrap();
    let body = expect_problem_of(response, 503, "unavailable").await;
    assert!(
        body["detail"].as_str().unwrap().contains("echo is failing"),
        "{body}"
    );
    expect_calls_and_breaker(&gateway, &hits, 4, &name, "open").await;
}

#[tokio::test]
async fn a_get_is_retried_once_after_a_503() {
    let upstream = Flaky::spawn(503, 1).await;
    let gateway = gateway_before(&upstream, |_| {}).await;

    let seen = echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;

    assert_eq!(seen["upstream"], "flaky");
    assert_eq!(upstream.hits(), 2, "one failure, one retry");
}

#[tokio::test]
async fn a_get_is_retried_at_most_max_attempts_times() {
    let upstream = Flaky::failing(502).await;
    let gateway = gateway_before(&upstream, |config| config.gateway.retry.max_attempts = 3).await;

    let response = gateway.get("/api/echo/items").send().await.unwrap();

    assert_eq!(response.status(), 502, "the last answer is passed on");
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn retries_under_sustained_failure_stay_within_the_budget() {
    let upstream = Flaky::failing(503).await;
    let gateway = gateway_before(&upstream, |config| {
        config.gateway.rate_limit.enabled = false;
        // Every attempt may retry four times; only the budget holds them back.
        config.gateway.retry.max_attempts = 5;
        config.gateway.retry.backoff_base_ms = 1;
        config.gateway.retry.backoff_cap_ms = 2;
        config.gateway.retry.budget_percent = 10;
        config.gateway.retry.budget_min_per_sec = 1;
        config.gateway.retry.budget_window_secs = 10;
        // A breaker that never judges, so that every request reaches the upstream.
        config.gateway.circuit_breaker.sliding_window_size = 1_000;
        config.gateway.circuit_breaker.minimum_number_of_calls = 1_000;
    })
    .await;

    let requests = 200;
    gateway.expect_status("/api/echo/items", 503, requests).await;

    // The budget: 10 % of the requests, plus the floor of 1/s over the 10 s window.
    let allowed_retries = requests / 10 + 10;
    let retries = upstream.hits() - requests;
    assert!(retries > 0, "the budget allows some retries");
    assert!(
        retries <= allowed_retries,
        "{retries} retries for {requests} requests; the budget allows {allowed_retries}"
    );
}

#[tokio::test]
async fn a_connection_error_is_retried_on_the_next_instance() {
    let gateway = spawn_gateway_with(|config| {
        // The first pick of each request is the instance that is down.
        let echo = config.upstreams.get_mut("echo").unwrap();
        echo.insert(0, closed_url());
    })
    .await;

    for _ in 0..2 {
        echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;
    }
    assert_eq!(gateway.echo.hits(), 2);
}

#[tokio::test]
async fn a_post_without_an_idempotency_key_is_not_retried() {
    let upstream = Flaky::spawn(503, 1).await;
    let gateway = gateway_before(&upstream, |_| {}).await;

    let response = gateway.post("/api/echo/orders").send().await.unwrap();

    assert_eq!(response.status(), 503, "the upstream's answer is passed on");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_keyed_post_is_retried_only_without_a_body() {
    let upstream = Flaky::spawn(503, 1).await;
    let gateway = gateway_before(&upstream, |_| {}).await;

    let seen = echoed(
        gateway
            .post("/api/echo/orders/7/cancel")
            .header("idempotency-key", "cancel-7")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen_header(&seen, "idempotency-key"), ["cancel-7"]);
    assert_eq!(upstream.hits(), 2, "the empty keyed POST was retried");

    // The body is streamed upstream and not kept, so it cannot be sent a second time.
    upstream.failures_left.store(1, Ordering::SeqCst);
    let response = gateway
        .post("/api/echo/orders")
        .header("idempotency-key", "order-8")
        .body(r#"{"sku":"A"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.hits(), 3, "a keyed POST with a body is not retried");
}

/// The deadline the upstream saw for a `GET path` that the client sent with `deadline_ms`.
async fn deadline_seen(gateway: &TestGateway, path: &str, deadline_ms: &str) -> u64 {
    let seen = echoed(
        gateway
            .get_with_header(path, "x-request-deadline-ms", deadline_ms)
            .await,
    )
    .await;
    let values = seen_header(&seen, "x-request-deadline-ms");
    assert_eq!(values.len(), 1, "one deadline reaches the upstream: {seen}");
    values[0]
        .parse()
        .expect("the deadline is a number of milliseconds")
}

/// A gateway whose upstream timeout is `default_ms`, with a public route `prefix` to `echo` that
/// has a timeout of its own, `route_ms`.
async fn gateway_with_a_route_timeout(default_ms: u64, prefix: &str, route_ms: u64) -> TestGateway {
    spawn_gateway_with(|config| {
        config.gateway.upstream_timeout_ms = default_ms;
        let route = RouteConfig::new(prefix, "echo", RouteAuth::Public).with_timeout_ms(route_ms);
        config.gateway.routes.push(route);
    })
    .await
}

#[tokio::test]
async fn the_upstream_sees_the_time_left_and_never_the_clients_deadline() {
    let gateway = gateway_with_a_route_timeout(2_000, "/api/echo/quick", 700).await;

    let left = deadline_seen(&gateway, "/api/echo/items", "999999").await;
    assert!((1_000..=2_000).contains(&left), "{left} ms left of 2000");

    let left = deadline_seen(&gateway, "/api/echo/quick/items", "5").await;
    assert!((200..=700).contains(&left), "{left} ms left of the route's 700");
}

#[tokio::test]
async fn a_route_timeout_shorter_than_the_default_cuts_a_slow_upstream_with_504() {
    // A default beyond the test client's patience: only the route's own timeout can answer in
    // time.
    let gateway = gateway_with_a_route_timeout(60_000, "/api/echo/hasty", 300).await;

    gateway
        .expect_upstream_timeout("/api/echo/hasty/never", 300)
        .await;
}
