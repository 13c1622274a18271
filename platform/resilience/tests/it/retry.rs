use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use http::{Method, Request, Response, StatusCode};
use mercato_resilience::retry::{Backoff, RetryConfig, RetryLayer};
use mercato_resilience::{ResilienceError, classify};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::support::{Calls, TestError};

type Req = Request<String>;
type Res = Response<()>;

fn config() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
        },
        ..RetryConfig::default()
    }
}

fn transient(result: &Result<Res, TestError>) -> bool {
    classify::transient_http(result, |_| false)
}

/// A retrying client in front of an upstream that answers every call with `answer`.
fn client(
    config: &RetryConfig,
    calls: &Calls,
    answer: fn() -> Result<Res, TestError>,
) -> impl Service<Req, Response = Res, Error = TestError, Future: Send> + Clone + use<> {
    let calls = calls.clone();
    let upstream = service_fn(move |_: Req| {
        calls.hit();
        async move { answer() }
    });
    RetryLayer::new(config, classify::idempotent_or_keyed::<String>, transient)
        .unwrap()
        .layer(upstream)
}

fn status(code: StatusCode) -> Result<Res, TestError> {
    let mut response = Response::new(());
    *response.status_mut() = code;
    Ok(response)
}

fn request(method: Method) -> Req {
    Request::builder()
        .method(method)
        .uri("/api/products")
        .body(String::new())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_request_is_retried_on_a_transient_answer_up_to_max_attempts() {
    let calls = Calls::default();
    let svc = client(&config(), &calls, || status(StatusCode::SERVICE_UNAVAILABLE));
    let response = svc.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_post_without_an_idempotency_key_is_never_retried() {
    let calls = Calls::default();
    let svc = client(&config(), &calls, || status(StatusCode::SERVICE_UNAVAILABLE));
    svc.oneshot(request(Method::POST)).await.unwrap();
    assert_eq!(calls.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_with_an_idempotency_key_is_retried() {
    let calls = Calls::default();
    let svc = client(&config(), &calls, || {
        Err(ResilienceError::TimedOut(Duration::from_secs(1)))
    });
    let mut post = request(Method::POST);
    post.headers_mut()
        .insert(classify::IDEMPOTENCY_KEY, "order-42".parse().unwrap());
    assert!(matches!(
        svc.oneshot(post).await,
        Err(ResilienceError::TimedOut(_))
    ));
    assert_eq!(calls.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_not_retried() {
    let answers: [fn() -> Result<Res, TestError>; 3] = [
        || status(StatusCode::INTERNAL_SERVER_ERROR),
        || status(StatusCode::NOT_FOUND),
        || Err(ResilienceError::Inner("bad request body")),
    ];
    for answer in answers {
        let calls = Calls::default();
        let _ = client(&config(), &calls, answer)
            .oneshot(request(Method::GET))
            .await;
        assert_eq!(calls.count(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_success_after_a_transient_failure_is_returned() {
    let calls = Calls::default();
    let seen = calls.clone();
    let upstream = service_fn(move |_: Req| {
        seen.hit();
        let first = seen.count() == 1;
        async move {
            if first {
                status(StatusCode::BAD_GATEWAY)
            } else {
                status(StatusCode::OK)
            }
        }
    });
    let svc = RetryLayer::new(&config(), classify::idempotent_or_keyed::<String>, transient)
        .unwrap()
        .layer(upstream);
    let response = svc.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn waits_between_attempts_are_jittered_within_the_growing_ceiling() {
    let config = RetryConfig {
        max_attempts: 6,
        backoff: Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        },
        ..RetryConfig::default()
    };
    let mut gaps_by_retry: Vec<Vec<Duration>> = vec![Vec::new(); 5];
    // The paused clock sleeps in whole milliseconds, so the first retry's waits take one of about
    // a hundred values: forty runs show the spread without counting on no two runs colliding.
    for _ in 0..40 {
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let seen = stamps.clone();
        let upstream = service_fn(move |_: Req| {
            seen.lock().unwrap().push(Instant::now());
            async { status(StatusCode::SERVICE_UNAVAILABLE) }
        });
        RetryLayer::new(&config, classify::idempotent_or_keyed::<String>, transient)
            .unwrap()
            .layer(upstream)
            .oneshot(request(Method::GET))
            .await
            .unwrap();
        let stamps = stamps.lock().unwrap();
        assert_eq!(stamps.len(), 6);
        for (retry, pair) in stamps.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                gap <= config.backoff.ceiling(retry as u32),
                "retry {retry}: {gap:?}"
            );
            gaps_by_retry[retry].push(gap);
        }
    }
    for gaps in &gaps_by_retry {
        let distinct: std::collections::HashSet<_> = gaps.iter().collect();
        assert!(distinct.len() > 20, "waits are jittered: {gaps:?}");
    }
    let longest = |gaps: &Vec<Duration>| gaps.iter().max().copied().unwrap();
    assert!(
        longest(&gaps_by_retry[4]) > config.backoff.ceiling(0),
        "waits grow"
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_in_a_failure_storm() {
    let config = config();
    let calls = Calls::default();
    let svc = client(&config, &calls, || {
        Err(ResilienceError::TimedOut(Duration::from_secs(1)))
    });
    let results = join_all((0..1000).map(|_| svc.clone().oneshot(request(Method::GET)))).await;

    let retries = calls.count() - 1000;
    // 20 % of 1000 requests, plus 10 per second over the 10 s window.
    let cap = 200 + 10 * 10;
    assert!(retries <= cap, "{retries} retries");
    assert!(retries >= 200, "the budget was used: {retries}");
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(ResilienceError::BudgetExhausted { .. })))
        .count();
    assert!(exhausted > 0);
}
