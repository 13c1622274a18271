//! Ready-made classifiers for the breaker and the retry layer, and the retryable-request predicate
//! for HTTP. Each is a plain function, so a caller can pass it as is or wrap it in a closure.

use http::{Method, Request, Response, StatusCode};

use crate::error::ResilienceError;

/// The header that makes a non-idempotent request safe to repeat.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Breaker classifier: every error is a failure.
pub fn errors<Res, E>(result: &Result<Res, ResilienceError<E>>) -> bool {
    result.is_err()
}

/// Breaker classifier for HTTP: errors and 5xx are failures; 4xx are the caller's fault, not the
/// upstream's, so they are not.
pub fn server_errors<B, E>(result: &Result<Response<B>, ResilienceError<E>>) -> bool {
    match result {
        Ok(response) => response.status().is_server_error(),
        Err(_) => true,
    }
}

/// Retry classifier for HTTP: 502, 503 and 504 answers, and errors that say they are transient.
/// `inner` judges the transport's own errors (a refused or reset connection usually is transient).
pub fn transient_http<B, E>(
    result: &Result<Response<B>, ResilienceError<E>>,
    inner: impl FnOnce(&E) -> bool,
) -> bool {
    match result {
        Ok(response) => matches!(
            response.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
        Err(error) => error.is_transient_by(inner),
    }
}

/// Retryable-request predicate for HTTP: an idempotent method (RFC 9110 §9.2.2), or any request
/// carrying an `Idempotency-Key`, which the server uses to answer a repeat without acting twice.
pub fn idempotent_or_keyed<B>(request: &Request<B>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || request.headers().contains_key(IDEMPOTENCY_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Result = std::result::Result<Response<()>, ResilienceError<()>>;

    fn status(code: u16) -> Result {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(code).unwrap();
        Ok(response)
    }

    #[test]
    fn server_errors_count_but_client_errors_do_not() {
        assert!(server_errors(&status(500)));
        assert!(server_errors(&Result::Err(ResilienceError::DeadlineExceeded)));
        assert!(!server_errors(&status(404)));
        assert!(!server_errors(&status(200)));
    }

    #[test]
    fn only_gateway_style_statuses_and_transient_errors_are_retried() {
        assert!(transient_http(&status(503), |()| false));
        assert!(!transient_http(&status(500), |()| false));
        assert!(transient_http(
            &Result::Err(ResilienceError::TimedOut(std::time::Duration::ZERO)),
            |()| false
        ));
        assert!(transient_http(&Result::Err(ResilienceError::Inner(())), |()| {
            true
        }));
    }

    #[test]
    fn a_post_is_retryable_only_with_an_idempotency_key() {
        let post = Request::post("/orders").body(()).unwrap();
        assert!(!idempotent_or_keyed(&post));
        let keyed = Request::post("/orders")
            .header(IDEMPOTENCY_KEY, "k1")
            .body(())
            .unwrap();
        assert!(idempotent_or_keyed(&keyed));
        assert!(idempotent_or_keyed(&Request::get("/orders").body(()).unwrap()));
    }
}
