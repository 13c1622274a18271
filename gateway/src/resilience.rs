//! The upstream call, guarded by [`mercato_resilience`]'s layers, outermost first:
//!
//! ```text
//! Bulkhead (one per upstream) -> Retry (shared budget) -> pick an instance (its breaker's leave)
//!   -> Timeout (+ deadline header) -> transport
//! ```
//!
//! - The bulkhead caps the requests one upstream may hold at once, so a slow service cannot take
//!   every connection and task of the gateway; a full one answers `503` after a short queue.
//! - Each attempt picks an instance ([`crate::upstream`]): the group by the blue/green split,
//!   then the balancer's choice among the instances that pass their health checks and whose
//!   circuit breaker admits the call. Each instance has its own breaker, named
//!   `<upstream>@<host:port>`, counting `5xx` answers, connection errors and timeouts as
//!   failures; `4xx` answers, errors caused by the client's own body (too large, aborted), and
//!   deliberate shedding are not. Shedding is a `503` problem of orders' type `backlog-full`
//!   (past its backlog bound): that instance is answering and refuses some orders on purpose,
//!   and ejecting it would refuse every request to it instead of some. Any other `503`, with
//!   `Retry-After` or not, is a failure: a service that cannot serve (not ready, its own
//!   dependencies down) says when to come back too. To tell them apart the gateway reads a
//!   `503`'s body when it is a problem document of known, small length, and relays it as read.
//!   An instance whose breaker is open is skipped (passive outlier ejection) until a probe
//!   through the half-open breaker succeeds. When every instance refuses, the caller gets
//!   [`ResilienceError::CircuitOpen`] at once.
//! - Only idempotent requests are retried (GET, HEAD, OPTIONS, or any request carrying an
//!   `Idempotency-Key`), and only when their body is empty: the gateway streams request bodies
//!   to the upstream and keeps no copy, so a keyed POST with a body cannot be sent twice and is
//!   **not** retried here (the client, which still has the body, may repeat it with its key).
//!   Retries follow transport failures and `502`/`503`/`504` answers, never a timeout, and never
//!   run past the request's deadline. A retry picks again, and the failed instance's latency
//!   estimate now carries the failure, so it usually goes elsewhere.
//! - The [`Deadline`] (the route's timeout from when forwarding starts) bounds every attempt and
//!   reaches the upstream as `x-request-deadline-ms`, the milliseconds left. The timeout sits
//!   below the pick, so an instance that hangs is charged with the timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use mercato_resilience::classify::IDEMPOTENCY_KEY;
use mercato_resilience::{
    BulkheadLayer, Deadline, DeadlineCarrier, Replay, ResilienceError, RetryLayer, TimeoutLayer,
};

use crate::StartError;
use crate::adaptive::AdaptiveLimit;
use crate::config::GatewayConfig;
use crate::upstream::Instance;
use crate::upstream::Upstreams;
use crate::upstream::connections::{PoolSettings, SendError, UpstreamBody};

/// The problem type of the orders service's refusal past its backlog bound
/// (`services/orders/src/api/orders.rs`): the one `503` that is shedding, not failing.
pub const BACKLOG_FULL: &str = "urn:mercato:problem:backlog-full";

/// The largest `503` body read to learn its problem type; a larger one is not a known refusal.
const SHED_BODY_LIMIT: u64 = 16 * 1024;

/// Why the transport could not deliver a request.
#[derive(Debug)]
pub enum TransportError {
    /// No connection, a reset, an answer that is not HTTP, or the client's body failed or was
    /// too large.
    Http(SendError),
    /// The upstream has no instance (cannot happen with a validated configuration).
    NoInstance,
    /// The upstream holds as many requests as its adaptive limit allows; this one was shed.
    Shed,
}

impl TransportError {
    /// Whether the upstream (or the way to it) is to blame, rather than the client's request.
    fn is_upstream_fault(&self) -> bool {
        match self {
            Self::Http(error) => !caused_by_client(error),
            Self::NoInstance | Self::Shed => false,
        }
    }
}

/// True when the client's request body ended the call: it outgrew the limit or failed to stream.
pub fn caused_by_client(error: &SendError) -> bool {
    matches!(error, SendError::Body(_))
}

/// What one upstream call returns.
pub type CallResult = Result<http::Response<UpstreamBody>, ResilienceError<TransportError>>;

/// A request on its way to an upstream, its URI holding only the path and query (the transport
/// picks the instance).
#[derive(Debug)]
pub struct Outgoing {
    /// Shared by the request's attempts: a retry sends the same head again without copying its
    /// headers (the upstream connection writes what differs, `Host` and the deadline, into the
    /// head it sends).
    head: Arc<http::request::Parts>,
    body: Body,
    /// Kept beside the request rather than among its extensions: nothing past the gateway reads
    /// it there, and an extension costs two allocations on every attempt.
    deadline: Deadline,
    /// The body is known to be empty, so the request can be sent again.
    replayable: bool,
}

impl Outgoing {
    /// `request`, bound by `deadline`.
    #[must_use]
    pub fn new(request: http::Request<Body>, deadline: Deadline) -> Self {
        let (head, body) = request.into_parts();
        let replayable = body.is_end_stream() || body.size_hint().exact() == Some(0);
        Self {
            head: Arc::new(head),
            body,
            deadline,
            replayable,
        }
    }
}

impl Replay for Outgoing {
    fn replay(&self) -> Option<Self> {
        self.replayable.then(|| Self {
            head: Arc::clone(&self.head),
            body: Body::empty(),
            deadline: self.deadline,
            replayable: true,
        })
    }
}

impl DeadlineCarrier for Outgoing {
    fn deadline(&self) -> Option<Deadline> {
        Some(Deadline::current().map_or(self.deadline, |current| current.min(self.deadline)))
    }

    /// Kept, not inserted among the headers: the upstream connection writes it into the head as
    /// `x-request-deadline-ms` when the request goes out, without a header map insert.
    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = deadline;
    }
}

/// Idempotent (by method or by key) and without a body to lose; see the module docs.
fn retryable(outgoing: &Outgoing) -> bool {
    let head = &outgoing.head;
    outgoing.replayable
        && (matches!(head.method, Method::GET | Method::HEAD | Method::OPTIONS)
            || head.headers.contains_key(IDEMPOTENCY_KEY))
}

/// The answers that say "try again" (502, 503, 504) and transport failures on the way to or
/// from the upstream: a refused connection, or one reset mid-request by an instance that died.
/// Only requests that are safe to repeat get here (see [`retryable`]).
fn transient(result: &CallResult) -> bool {
    match result {
        Ok(response) => matches!(response.status().as_u16(), 502..=504),
        Err(ResilienceError::Inner(error)) => error.is_upstream_fault(),
        Err(_) => false,
    }
}

/// `5xx` answers, upstream-side errors and timeouts; not `4xx`, not the client's own body, not
/// an upstream shedding load (`shed`: see [`sheds_load`]).
fn breaker_failure(result: &CallResult, shed: bool) -> bool {
    match result {
        Ok(response) => response.status().is_server_error() && !shed,
        Err(ResilienceError::Inner(error)) => error.is_upstream_fault(),
        Err(_) => true,
    }
}

/// Whether a `503` might be deliberate shedding: a problem document small enough to read.
fn may_shed<B: http_body::Body>(response: &http::Response<B>) -> bool {
    response.status() == StatusCode::SERVICE_UNAVAILABLE
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
        && response
            .body()
            .size_hint()
            .upper()
            .is_some_and(|len| len <= SHED_BODY_LIMIT)
}

/// A refusal the upstream decided on rather than a failure: a `503` problem of type
/// [`BACKLOG_FULL`]. Any other `503` (with `Retry-After` or not) is a failure.
fn sheds_load(status: StatusCode, body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    status == StatusCode::SERVICE_UNAVAILABLE
        && serde_json::from_slice::<Kind<'_>>(body)
            .ok()
            .and_then(|k| k.kind)
            .is_some_and(|kind| kind == BACKLOG_FULL)
}

/// Reads a `503` problem whole (within `timeout`) to learn whether it is shedding; the answer
/// goes on with the body as read.
async fn read_refusal(response: http::Response<UpstreamBody>, timeout: Duration) -> (CallResult, bool) {
    let (parts, body) = response.into_parts();
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => {
            let bytes: Bytes = collected.to_bytes();
            let shed = sheds_load(parts.status, &bytes);
            (
                Ok(http::Response::from_parts(parts, UpstreamBody::read(bytes))),
                shed,
            )
        }
        Ok(Err(error)) => (Err(ResilienceError::Inner(TransportError::Http(error))), false),
        Err(_) => (Err(ResilienceError::TimedOut(timeout)), false),
    }
}

type Predicate = fn(&Outgoing) -> bool;
type Classifier = fn(&CallResult) -> bool;

/// One attempt: picks the instance (passing over those in `failed`, the ones that already failed
/// this request), sends within the timeout, and charges the instance with the outcome. `failed`
/// lives with the request's call and holds nothing until an attempt fails, so a request that
/// needs no retry allocates nothing for it.
async fn attempt(
    upstreams: &Upstreams,
    upstream: &str,
    pool: PoolSettings,
    timeout: Duration,
    failed: &std::sync::Mutex<Vec<Arc<Instance>>>,
    outgoing: Outgoing,
) -> CallResult {
    let picked = {
        let failed = failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        upstreams.pick_avoiding(upstream, &failed)
    };
    let pick = match picked {
        Ok(Some(pick)) => pick,
        Ok(None) => return Err(ResilienceError::Inner(TransportError::NoInstance)),
        Err(refused) => return Err(refused),
    };
    // The request's URI stays the path and query; the instance's connections address it.
    let connections = &pick.instance.connections;
    let sent = TimeoutLayer::new(timeout)
        // Boxed: the exchange's future is large, and moving it through the timeout's layers
        // copies more than one allocation costs.
        .run(outgoing, |outgoing| {
            Box::pin(async move {
                connections
                    .send(&outgoing.head, outgoing.body, Some(outgoing.deadline), pool)
                    .await
                    .map_err(|e| ResilienceError::Inner(TransportError::Http(e)))
            })
        })
        .await;
    let (result, shed) = match sent {
        Ok(response) if may_shed(&response) => read_refusal(response, timeout).await,
        other => (other, false),
    };
    if transient(&result) {
        failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::clone(&pick.instance));
    }
    pick.finish(breaker_failure(&result, shed));
    result
}

/// The bulkheads and the retry budget of every upstream.
pub struct Resilience {
    pool: PoolSettings,
    upstreams: Upstreams,
    bulkheads: BTreeMap<String, BulkheadLayer>,
    retry: RetryLayer<Predicate, Classifier>,
    limits: BTreeMap<String, Arc<AdaptiveLimit>>,
}

impl std::fmt::Debug for Resilience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resilience")
            .field("bulkheads", &self.bulkheads.keys())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Resilience {
    /// A bulkhead per upstream and one retry budget; the breakers live with the instances.
    ///
    /// # Errors
    /// Invalid `[gateway.bulkhead]` or `[gateway.retry]` settings.
    pub fn new(
        gateway: &GatewayConfig,
        pool: PoolSettings,
        upstreams: Upstreams,
        limits: BTreeMap<String, Arc<AdaptiveLimit>>,
    ) -> Result<Self, StartError> {
        let invalid = |section: &str, e: mercato_resilience::ConfigError| StartError::Config {
            key: format!("gateway.{section}.{}", e.key),
            message: e.reason.into(),
        };
        let mut bulkheads = BTreeMap::new();
        for name in upstreams.names() {
            let bulkhead = BulkheadLayer::new(name, &gateway.bulkhead.to_config())
                .map_err(|e| invalid("bulkhead", e))?;
            bulkheads.insert(name.to_owned(), bulkhead);
        }
        let retry = RetryLayer::new(
            &gateway.retry.to_config(),
            retryable as Predicate,
            transient as Classifier,
        )
        .map_err(|e| invalid("retry", e))?;
        Ok(Self {
            pool,
            upstreams,
            bulkheads,
            retry,
            limits,
        })
    }

    /// Sends `outgoing` to `upstream`, each attempt limited to `timeout` and all of them to the
    /// request's deadline.
    pub async fn call(&self, upstream: &Arc<str>, outgoing: Outgoing, timeout: Duration) -> CallResult {
        let Some(bulkhead) = self.bulkheads.get(upstream.as_ref()) else {
            return Err(ResilienceError::Inner(TransportError::NoInstance));
        };
        let permit = match self.limits.get(upstream.as_ref()) {
            Some(limit) => match limit.try_acquire() {
                Some(permit) => Some(permit),
                None => return Err(ResilienceError::Inner(TransportError::Shed)),
            },
            None => None,
        };
        // The layers run in place, as the bulkhead's permit and the retry loop, rather than as a
        // stack of services with a boxed future each per request.
        let result = async {
            let _place = bulkhead.acquire::<TransportError>().await?;
            let failed = std::sync::Mutex::default();
            self.retry
                .run(outgoing, |outgoing| {
                    attempt(&self.upstreams, upstream, self.pool, timeout, &failed, outgoing)
                })
                .await
        }
        .await;
        // A sample is the upstream's latency; a request the client's own body ended says nothing.
        let upstream_answered = match &result {
            Ok(_) => true,
            Err(ResilienceError::Inner(error)) => error.is_upstream_fault(),
            Err(_) => true,
        };
        if let Some(permit) = permit.filter(|_| upstream_answered) {
            permit.finish();
        }
        result
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

    #[test]
    fn only_a_503_backlog_full_problem_sheds_load() {
        let problem = |kind: &str| format!(r#"{{"type":"{kind}","title":"t","status":503}}"#);
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        assert!(sheds_load(unavailable, problem(BACKLOG_FULL).as_bytes()));
        assert!(
            !sheds_load(unavailable, problem("urn:mercato:problem:unavailable").as_bytes()),
            "a service that cannot serve fails, whatever it says about retrying"
        );
        assert!(
            !sheds_load(unavailable, b"backlog-full"),
            "not a problem document"
        );
        assert!(!sheds_load(unavailable, br#"{"title":"no type"}"#));
        assert!(!sheds_load(
            StatusCode::INTERNAL_SERVER_ERROR,
            problem(BACKLOG_FULL).as_bytes()
        ));
    }

    #[test]
    fn only_a_small_problem_document_is_read_for_its_type() {
        let answer = |status: u16, content_type: &str, body: &'static str| {
            http::Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, content_type)
                .body(http_body_util::Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()
        };
        assert!(may_shed(&answer(503, "application/problem+json", "{}")));
        assert!(!may_shed(&answer(503, "text/plain", "{}")));
        assert!(!may_shed(&answer(502, "application/problem+json", "{}")));
        let large = "x".repeat(usize::try_from(SHED_BODY_LIMIT).unwrap() + 1).leak();
        assert!(!may_shed(&answer(503, "application/problem+json", large)));
    }

    #[tokio::test]
    async fn a_replay_keeps_headers_and_deadline_and_has_no_body() {
        let original = outgoing(Method::GET, true, Body::empty());
        let copy = original.replay().unwrap();
        assert_eq!(copy.head.headers[IDEMPOTENCY_KEY], "k1");
        assert!(
            Arc::ptr_eq(&copy.head, &original.head),
            "the head is shared, not copied"
        );
        assert_eq!(copy.deadline(), original.deadline());
        assert!(copy.body.is_end_stream());
        assert!(outgoing(Method::GET, false, Body::from("x")).replay().is_none());
    }
}
