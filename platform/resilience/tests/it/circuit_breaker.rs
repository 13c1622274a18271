use std::time::Duration;

use mercato_resilience::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakerMetrics, CircuitState,
    ResilienceError, classify,
};
use prometheus_client::registry::Registry;
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::support::{Calls, TestError};

/// What a test call asks the upstream to do.
#[derive(Debug, Clone, Copy)]
enum Call {
    Succeed,
    Fail,
    Slow,
    Hang,
}

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_rate_threshold: 0.5,
        slow_call_rate_threshold: 0.5,
        slow_call_duration_threshold: Duration::from_secs(1),
        sliding_window_size: 20,
        minimum_number_of_calls: 10,
        wait_duration_in_open: Duration::from_secs(5),
        permitted_calls_in_half_open: 3,
        probe_timeout: Duration::from_secs(2),
    }
}

fn breaker(metrics: Option<CircuitBreakerMetrics>) -> CircuitBreaker {
    CircuitBreaker::new("payments", config(), metrics).unwrap()
}

fn upstream(
    breaker: &CircuitBreaker,
    calls: &Calls,
) -> impl Service<Call, Response = &'static str, Error = TestError, Future: Send> + Clone + use<> {
    let calls = calls.clone();
    let svc = service_fn(move |call: Call| {
        calls.hit();
        async move {
            match call {
                Call::Succeed => Ok("ok"),
                Call::Fail => Err(ResilienceError::Inner("boom")),
                Call::Slow => {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    Ok("late")
                }
                Call::Hang => std::future::pending().await,
            }
        }
    });
    CircuitBreakerLayer::new(breaker.clone(), classify::errors).layer(svc)
}

async fn send<S>(svc: &mut S, call: Call) -> Result<&'static str, TestError>
where
    S: Service<Call, Response = &'static str, Error = TestError>,
{
    svc.ready().await?.call(call).await
}

async fn open(svc: &mut (impl Service<Call, Response = &'static str, Error = TestError> + Clone)) {
    for _ in 0..10 {
        let _ = send(svc, Call::Fail).await;
    }
}

/// A new breaker without metrics: the breaker, the calls that reached its upstream, and the
/// service in front of it.
fn fresh() -> (
    CircuitBreaker,
    Calls,
    impl Service<Call, Response = &'static str, Error = TestError, Future: Send> + Clone,
) {
    let breaker = breaker(None);
    let calls = Calls::default();
    let svc = upstream(&breaker, &calls);
    (breaker, calls, svc)
}

/// As [`fresh`], opened by ten failures, `later` after they ended.
async fn opened(
    later: Duration,
) -> (
    CircuitBreaker,
    Calls,
    impl Service<Call, Response = &'static str, Error = TestError, Future: Send> + Clone,
) {
    let (breaker, calls, mut svc) = fresh();
    open(&mut svc).await;
    advance(later).await;
    (breaker, calls, svc)
}

#[tokio::test(start_paused = true)]
async fn opens_after_the_minimum_number_of_calls_at_the_failure_threshold_and_not_before() {
    let (breaker, _, mut svc) = fresh();
    for _ in 0..9 {
        assert!(send(&mut svc, Call::Fail).await.is_err());
    }
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "nine calls are too few to judge"
    );
    assert!(send(&mut svc, Call::Fail).await.is_err());
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_the_failure_threshold() {
    let (breaker, _, mut svc) = fresh();
    for i in 0..20 {
        let call = if i % 5 >= 3 { Call::Fail } else { Call::Succeed };
        let _ = send(&mut svc, call).await;
    }
    assert_eq!(breaker.state(), CircuitState::Closed, "40 % failures");
}

#[tokio::test(start_paused = true)]
async fn opens_when_half_the_calls_are_slow_even_though_all_succeed() {
    let (breaker, _, mut svc) = fresh();
    for _ in 0..5 {
        assert!(send(&mut svc, Call::Succeed).await.is_ok());
        assert!(send(&mut svc, Call::Slow).await.is_ok());
    }
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn rejects_at_once_while_open_saying_when_to_retry() {
    let (_, calls, mut svc) = opened(Duration::from_secs(2)).await;

    let started = Instant::now();
    let rejected = send(&mut svc, Call::Succeed).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(calls.count(), 10, "the upstream saw nothing");
    match rejected {
        ResilienceError::CircuitOpen { name, retry_after } => {
            assert_eq!(&*name, "payments");
            assert_eq!(retry_after, Duration::from_secs(3));
        }
        other => panic!("expected an open circuit, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_permitted_probes() {
    let (breaker, calls, mut svc) = opened(Duration::from_secs(5)).await;

    // Probes are admitted when called, so calling four without awaiting shows the limit.
    let probes: Vec<_> = (0..4).map(|_| svc.call(Call::Slow)).collect();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let results = futures_util::future::join_all(probes).await;
    assert_eq!(calls.count(), 13, "three probes reached the upstream");
    assert!(results[..3].iter().all(Result::is_ok));
    assert!(matches!(results[3], Err(ResilienceError::CircuitOpen { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_times_out_and_reopens_the_breaker() {
    let (breaker, _, mut svc) = opened(Duration::from_secs(5)).await;

    let started = Instant::now();
    let probes: Vec<_> = (0..3).map(|_| svc.call(Call::Hang)).collect();
    let results = futures_util::future::join_all(probes).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "cut at the probe timeout"
    );
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(ResilienceError::TimedOut(_))))
    );
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_reopens_and_good_probes_close() {
    let (breaker, _, mut svc) = opened(Duration::from_secs(5)).await;
    for call in [Call::Succeed, Call::Fail, Call::Fail] {
        let _ = send(&mut svc, call).await;
    }
    assert_eq!(breaker.state(), CircuitState::Open, "two of three probes failed");

    advance(Duration::from_secs(5)).await;
    for _ in 0..3 {
        assert!(send(&mut svc, Call::Succeed).await.is_ok());
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn client_errors_do_not_open_an_http_breaker() {
    let breaker = breaker(None);
    let svc = service_fn(|status: u16| async move {
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok::<_, TestError>(response)
    });
    let mut svc = CircuitBreakerLayer::new(breaker.clone(), classify::server_errors).layer(svc);
    for _ in 0..20 {
        svc.ready().await.unwrap().call(404).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    for _ in 0..10 {
        svc.ready().await.unwrap().call(503).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_every_transition_and_show_the_current_state() {
    let mut registry = Registry::default();
    let metrics = CircuitBreakerMetrics::register(&mut registry);
    let breaker = breaker(Some(metrics));
    let mut svc = upstream(&breaker, &Calls::default());
    let render = |registry: &Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    };
    assert!(render(&registry).contains(r#"circuit_breaker_state{name="payments",state="closed"} 1"#));

    open(&mut svc).await;
    advance(Duration::from_secs(5)).await;
    for _ in 0..3 {
        send(&mut svc, Call::Succeed).await.unwrap();
    }

    let text = render(&registry);
    for state in ["open", "half_open", "closed"] {
        let line = format!(r#"circuit_breaker_transitions_total{{name="payments",state="{state}"}} 1"#);
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    assert!(text.contains(r#"circuit_breaker_state{name="payments",state="closed"} 1"#));
    assert!(text.contains(r#"circuit_breaker_state{name="payments",state="open"} 0"#));
}
