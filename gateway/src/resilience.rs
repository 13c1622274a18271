//! The upstream call, guarded by [`mercato_resilience`]'s layers, outermost first:
//!
//! ```text
//! Retry (shared budget) -> CircuitBreaker (one per upstream) -> Timeout (+ deadline header) -> transport
//! ```
//!
//! - The breaker of each upstream is named after it and counts `5xx` answers, connection errors
//!   and timeouts as failures; `4xx` answers and errors caused by the client's own body (too
//!   large, aborted) are not. While it is open, nothing is sent and the caller gets
//!   [`ResilienceError::CircuitOpen`] at once.
//! - Only idempotent requests are retried (GET, HEAD, OPTIONS, or any request carrying an
//!   `Idempotency-Key`), and only when their body is empty: the gateway streams request bodies
//!   to the upstream and keeps no copy, so a keyed POST with a body cannot be sent twice and is
//!   **not** retried here (the client, which still has the body, may repeat it with its key).
//!   Retries follow connection errors and `502`/`503`/`504` answers, never a timeout, and never
//!   run past the request's deadline.
//! - Each attempt picks the upstream's next instance, so a retry usually goes elsewhere.
//! - The [`Deadline`] (the route's timeout from when forwarding starts) bounds every attempt and
//!   reaches the upstream as `x-request-deadline-ms`, the milliseconds left.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::{Method, Uri};
use http_body::Body as _;
use http_body_util::LengthLimitError;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use mercato_resilience::classify::IDEMPOTENCY_KEY;
use mercato_resilience::{
    CircuitBreaker, CircuitBreakerLayer, CircuitBreakerMetrics, Deadline, DeadlineCarrier, Replay,
    ResilienceError, RetryLayer, TimeoutLayer,
};
use prometheus_client::registry::Registry;
use tower::{Layer as _, ServiceExt as _};

use crate::StartError;
use crate::config::GatewayConfig;
use crate::upstream::Upstreams;

/// Why the transport could not deliver a request.
#[derive(Debug)]
pub enum TransportError {
    /// The HTTP client failed: no connection, a reset, or the client's body failed or was too large.
    Http(hyper_util::client::legacy::Error),
    /// The upstream has no instance (cannot happen with a validated configuration).
    NoInstance,
}

impl TransportError {
    /// Whether the upstream (or the way to it) is to blame, rather than the client's request.
    fn is_upstream_fault(&self) -> bool {
        match self {
            Self::Http(error) => !caused_by_client(error),
            Self::NoInstance => false,
        }
    }

    fn is_connect(&self) -> bool {
        matches!(self, Self::Http(error) if error.is_connect())
    }
}

/// True when the client's request body ended the call: it outgrew the limit or failed to stream.
pub fn caused_by_client(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<LengthLimitError>()
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_user)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// What one upstream call returns.
pub type CallResult = Result<http::Response<Incoming>, ResilienceError<TransportError>>;

/// A request on its way to an upstream, its URI holding only the path and query (the transport
/// picks the instance).
#[derive(Debug)]
pub struct Outgoing {
    request: http::Request<Body>,
    /// The body is known to be empty, so the request can be rebuilt for another attempt.
    replayable: bool,
}

impl Outgoing {
    /// `request`, bound by `deadline`.
    #[must_use]
    pub fn new(mut request: http::Request<Body>, deadline: Deadline) -> Self {
        let body = request.body();
        let replayable = body.is_end_stream() || body.size_hint().exact() == Some(0);
        request.extensions_mut().insert(deadline);
        Self { request, replayable }
    }
}

impl Replay for Outgoing {
    fn replay(&self) -> Option<Self> {
        if !self.replayable {
            return None;
        }
        let original = &self.request;
        let mut copy = http::Request::new(Body::empty());
        *copy.method_mut() = original.method().clone();
        *copy.uri_mut() = original.uri().clone();
        *copy.version_mut() = original.version();
        *copy.headers_mut() = original.headers().clone();
        if let Some(deadline) = original.extensions().get::<Deadline>() {
            copy.extensions_mut().insert(*deadline);
        }
        Some(Self {
            request: copy,
            replayable: true,
        })
    }
}

impl DeadlineCarrier for Outgoing {
    fn deadline(&self) -> Option<Deadline> {
        self.request.deadline()
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.request.set_deadline(deadline);
    }
}

/// Idempotent (by method or by key) and without a body to lose; see the module docs.
fn retryable(outgoing: &Outgoing) -> bool {
    let request = &outgoing.request;
    outgoing.replayable
        && (matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS)
            || request.headers().contains_key(IDEMPOTENCY_KEY))
}

/// Connection errors and the answers that say "try again": 502, 503, 504.
fn transient(result: &CallResult) -> bool {
    match result {
        Ok(response) => matches!(response.status().as_u16(), 502..=504),
        Err(ResilienceError::Inner(error)) => error.is_connect(),
        Err(_) => false,
    }
}

/// `5xx` answers, upstream-side errors and timeouts; not `4xx`, not the client's own body.
fn breaker_failure(result: &CallResult) -> bool {
    match result {
        Ok(response) => response.status().is_server_error(),
        Err(ResilienceError::Inner(error)) => error.is_upstream_fault(),
        Err(_) => true,
    }
}

type Predicate = fn(&Outgoing) -> bool;
type Classifier = fn(&CallResult) -> bool;

/// Sends one attempt to the upstream's next instance.
#[derive(Clone)]
struct Transport {
    client: Client<HttpConnector, Body>,
    upstreams: Upstreams,
    upstream: Arc<str>,
}

impl tower::Service<Outgoing> for Transport {
    type Response = http::Response<Incoming>;
    type Error = ResilienceError<TransportError>;
    type Future = Pin<Box<dyn Future<Output = CallResult> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, outgoing: Outgoing) -> Self::Future {
        let mut request = outgoing.request;
        let Some(instance) = self.upstreams.pick(&self.upstream) else {
            return Box::pin(std::future::ready(Err(ResilienceError::Inner(
                TransportError::NoInstance,
            ))));
        };
        let mut target = instance.clone().into_parts();
        target.path_and_query = request.uri().path_and_query().cloned();
        if let Ok(uri) = Uri::from_parts(target) {
            *request.uri_mut() = uri;
        }
        let response = self.client.request(request);
        Box::pin(async move {
            response
                .await
                .map_err(|e| ResilienceError::Inner(TransportError::Http(e)))
        })
    }
}

/// The breakers and the retry budget of every upstream.
pub struct Resilience {
    client: Client<HttpConnector, Body>,
    upstreams: Upstreams,
    breakers: BTreeMap<String, CircuitBreaker>,
    retry: RetryLayer<Predicate, Classifier>,
}

impl std::fmt::Debug for Resilience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resilience")
            .field("breakers", &self.breakers.keys())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Resilience {
    /// A breaker per upstream, its metrics registered in `registry`, and one retry budget.
    ///
    /// # Errors
    /// Invalid `[gateway.circuit_breaker]` or `[gateway.retry]` settings.
    pub fn new(
        gateway: &GatewayConfig,
        client: Client<HttpConnector, Body>,
        upstreams: Upstreams,
        registry: &mut Registry,
    ) -> Result<Self, StartError> {
        let invalid = |section: &str, e: mercato_resilience::ConfigError| StartError::Config {
            key: format!("gateway.{section}.{}", e.key),
            message: e.reason.into(),
        };
        let metrics = CircuitBreakerMetrics::register(registry);
        let mut breakers = BTreeMap::new();
        for name in upstreams.names() {
            let breaker =
                CircuitBreaker::new(name, gateway.circuit_breaker.to_config(), Some(metrics.clone()))
                    .map_err(|e| invalid("circuit_breaker", e))?;
            breakers.insert(name.to_owned(), breaker);
        }
        let retry = RetryLayer::new(
            &gateway.retry.to_config(),
            retryable as Predicate,
            transient as Classifier,
        )
        .map_err(|e| invalid("retry", e))?;
        Ok(Self {
            client,
            upstreams,
            breakers,
            retry,
        })
    }

    /// Sends `outgoing` to `upstream`, each attempt limited to `timeout` and all of them to the
    /// request's deadline.
    pub async fn call(&self, upstream: &Arc<str>, outgoing: Outgoing, timeout: Duration) -> CallResult {
        let transport = Transport {
            client: self.client.clone(),
            upstreams: self.upstreams.clone(),
            upstream: Arc::clone(upstream),
        };
        let timed = TimeoutLayer::new(timeout).layer(transport);
        let Some(breaker) = self.breakers.get(upstream.as_ref()) else {
            return Err(ResilienceError::Inner(TransportError::NoInstance));
        };
        let guarded = CircuitBreakerLayer::new(breaker.clone(), breaker_failure as Classifier).layer(timed);
        self.retry.layer(guarded).oneshot(outgoing).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(method: Method, key: bool, body: Body) -> Outgoing {
        let mut request = http::Request::builder().method(method).uri("/x");
        if key {
            request = request.header(IDEMPOTENCY_KEY, "k1");
        }
        Outgoing::new(
            request.body(body).unwrap(),
            Deadline::after(Duration::from_secs(1)),
        )
    }

    #[tokio::test]
    async fn only_idempotent_or_keyed_requests_without_a_body_are_retryable() {
        assert!(retryable(&outgoing(Method::GET, false, Body::empty())));
        assert!(retryable(&outgoing(Method::HEAD, false, Body::empty())));
        assert!(retryable(&outgoing(Method::POST, true, Body::empty())));
        assert!(!retryable(&outgoing(Method::POST, false, Body::empty())));
        assert!(!retryable(&outgoing(Method::POST, true, Body::from("{}"))));
        let stream = Body::from_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
            bytes::Bytes::from_static(b"x"),
        )]));
        assert!(!retryable(&outgoing(Method::GET, false, stream)));
    }

    #[tokio::test]
    async fn a_replay_keeps_headers_and_deadline_and_has_no_body() {
        let original = outgoing(Method::GET, true, Body::empty());
        let copy = original.replay().unwrap();
        assert_eq!(copy.request.headers()[IDEMPOTENCY_KEY], "k1");
        assert_eq!(copy.deadline(), original.deadline());
        assert!(copy.request.body().is_end_stream());
        assert!(outgoing(Method::GET, false, Body::from("x")).replay().is_none());
    }
}
