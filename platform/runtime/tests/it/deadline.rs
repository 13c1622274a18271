use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use mercato_runtime::HttpConfig;
use mercato_runtime::resilience::Deadline;

use crate::support::{Options, expect_problem, spawn_app_with};

/// `/counted` counts the requests its handler ran; `/left` answers the milliseconds left before
/// the handler's deadline.
async fn spawn_with_deadline_routes(request_timeout_ms: u64) -> (crate::support::TestApp, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let routes = Router::new()
        .route("/counted", get(counted))
        .route("/left", get(left))
        .with_state(ran.clone());
    let app = spawn_app_with(Options {
        routes,
        config: HttpConfig {
            request_timeout_ms,
            ..HttpConfig::default()
        },
        ..Options::default()
    })
    .await;
    (app, ran)
}

async fn counted(State(ran): State<Arc<AtomicUsize>>) -> &'static str {
    ran.fetch_add(1, Ordering::SeqCst);
    "ran"
}

async fn left() -> String {
    Deadline::current()
        .map(|d| d.remaining().as_millis().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_request_whose_deadline_has_passed_is_refused_without_running_the_handler() {
    let (app, ran) = spawn_with_deadline_routes(30_000).await;
    let response = app
        .get_with_header("/counted", "x-request-deadline-ms", "0")
        .await;
    expect_problem(response, 504, "deadline-exceeded").await;
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    let response = app
        .get_with_header("/counted", "x-request-deadline-ms", "5000")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_handler_is_stopped_when_its_callers_deadline_passes() {
    let (app, _) = spawn_with_deadline_routes(30_000).await;
    // A 504 deadline problem, not the 503 of the 30 s request timeout.
    app.expect_deadline_exceeded("/never", 200).await;
}

#[tokio::test]
async fn the_handler_knows_its_deadline_bounded_by_the_request_timeout() {
    let (app, _) = spawn_with_deadline_routes(5_000).await;
    let left = |sent: Option<&'static str>| {
        let mut request = app.get("/left");
        if let Some(ms) = sent {
            request = request.header("x-request-deadline-ms", ms);
        }
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            text.parse::<u64>().unwrap_or_else(|_| panic!("{text:?}"))
        }
    };
    assert!((1..=800).contains(&left(Some("800")).await));
    assert!(
        (4_000..=5_000).contains(&left(Some("600000")).await),
        "capped by the timeout"
    );
    assert!((4_000..=5_000).contains(&left(None).await), "the timeout alone");
    assert!(
        (4_000..=5_000).contains(&left(Some("soon")).await),
        "a malformed deadline is ignored"
    );
}
