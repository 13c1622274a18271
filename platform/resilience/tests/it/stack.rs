use std::time::Duration;

use http::{Request, Response};
use mercato_resilience::{
    BulkheadConfig, BulkheadLayer, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitState,
    ResilienceError, RetryConfig, RetryLayer, TimeoutLayer, classify,
};
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::support::Calls;

/// A transport error, as a plain HTTP client would return it.
#[derive(Debug)]
struct Refused;

#[tokio::test(start_paused = true)]
async fn the_documented_stack_composes_over_a_plain_transport() {
    let calls = Calls::default();
    let seen = calls.clone();
    let transport = service_fn(move |_: Request<String>| {
        seen.hit();
        async { Err::<Response<()>, _>(Refused) }
    });
    let breaker = CircuitBreaker::new(
        "customers",
        CircuitBreakerConfig {
            minimum_number_of_calls: 4,
            ..CircuitBreakerConfig::default()
        },
        None,
    )
    .unwrap();
    let transient =
        |r: &Result<Response<()>, ResilienceError<Refused>>| classify::transient_http(r, |Refused| true);
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::new(
                &RetryConfig::default(),
                classify::idempotent_or_keyed::<String>,
                transient,
            )
            .unwrap(),
        )
        .layer(CircuitBreakerLayer::new(breaker.clone(), classify::server_errors))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(BulkheadLayer::new("customers", &BulkheadConfig::default()).unwrap())
        .map_err(ResilienceError::Inner)
        .service(transport);

    let first = client.clone().oneshot(Request::new(String::new())).await;
    assert!(matches!(first, Err(ResilienceError::Inner(Refused))));
    assert_eq!(calls.count(), 3, "three attempts");

    // The fourth failure opens the breaker; the retry then stops at the open circuit.
    let second = client.oneshot(Request::new(String::new())).await;
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(matches!(second, Err(ResilienceError::CircuitOpen { .. })));
    assert_eq!(calls.count(), 4);
}
