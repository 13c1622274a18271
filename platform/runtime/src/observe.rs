//! The middleware every request passes first: correlation id, span, limits, deadline, metrics,
//! access log.
//!
//! A service (not the gateway, which sets deadlines itself) takes the caller's deadline from
//! `x-request-deadline-ms` (or gRPC's `grpc-timeout`), bounded by its own request timeout. A
//! request whose deadline has already passed is answered at once without running the handler
//! (`504` problem, or gRPC `DEADLINE_EXCEEDED`); otherwise the handler runs with the deadline as
//! the task's current [`Deadline`], so the calls it makes never wait past it, and is stopped when
//! it passes.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either};
use http::{HeaderMap, header};
use mercato_resilience::Deadline;
use tracing::Instrument as _;

use crate::correlation::{self, CorrelationId};
use crate::grpc;
use crate::guard::earliest;
use crate::metrics::{HttpMetrics, RouteName};
use crate::problem::Problem;

/// The route label for requests that matched no route (bounded metric cardinality).
pub const UNMATCHED: &str = "unmatched";

/// A route label a handler sets on its response when no router template names the route (the
/// gateway labels proxied requests with the route prefix they matched).
#[derive(Debug, Clone)]
pub struct RouteLabel(pub Arc<str>);

/// A response with its route label beside it rather than among its extensions, whose first
/// one allocates the response's map: what a service answers with that [`Observe`] wraps
/// directly. Where something else takes it as a response (axum's router), the label becomes
/// a [`RouteLabel`] extension.
#[derive(Debug)]
pub struct LabelledResponse {
    pub response: Response,
    pub route: Option<Arc<str>>,
}

impl IntoResponse for LabelledResponse {
    fn into_response(self) -> Response {
        let mut response = self.response;
        if let Some(route) = self.route {
            response.extensions_mut().insert(RouteLabel(route));
        }
        response
    }
}

/// What [`Observe`] takes from the service it wraps: a response, and its route label when the
/// service gave one beside it.
pub trait IntoObserved {
    fn into_observed(self) -> (Response, Option<Arc<str>>);
}

impl<B> IntoObserved for http::Response<B>
where
    http::Response<B>: IntoResponse,
{
    fn into_observed(self) -> (Response, Option<Arc<str>>) {
        (self.into_response(), None)
    }
}

impl IntoObserved for LabelledResponse {
    fn into_observed(self) -> (Response, Option<Arc<str>>) {
        (self.response, self.route)
    }
}

/// What the middleware needs.
#[derive(Debug, Clone)]
pub struct Observer {
    pub service: &'static str,
    pub metrics: HttpMetrics,
    pub body_limit: usize,
    pub timeout: Option<Duration>,
    /// Whether callers may set the request's deadline; never at the edge, where clients are not
    /// trusted with it.
    pub accept_deadlines: bool,
}

/// The deadline the caller sent, if any.
fn caller_deadline(headers: &HeaderMap) -> Option<Deadline> {
    earliest(
        Deadline::from_headers(headers),
        grpc::deadline_from_timeout(headers),
    )
}

fn deadline_exceeded(grpc: bool) -> Response {
    if grpc {
        grpc::status_answer(tonic::Status::deadline_exceeded("the caller's deadline passed"))
    } else {
        Problem::deadline_exceeded().into_response()
    }
}

fn timed_out(grpc: bool) -> Response {
    const DETAIL: &str = "the request took too long and was stopped";
    if grpc {
        grpc::status_answer(tonic::Status::unavailable(DETAIL))
    } else {
        Problem::unavailable(DETAIL, 1).into_response()
    }
}

/// Puts [`observe`] in front of a service. A layer of its own rather than an axum `from_fn`
/// middleware, which boxes the inner service again and copies its state for every request.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    observer: Arc<Observer>,
}

impl ObserveLayer {
    #[must_use]
    pub fn new(observer: Observer) -> Self {
        Self {
            observer: Arc::new(observer),
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            observer: Arc::clone(&self.observer),
        }
    }
}

/// See [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    observer: Arc<Observer>,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response: IntoObserved, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The service that was polled ready serves this request; its clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let observer = Arc::clone(&self.observer);
        Box::pin(async move { Ok(observe(&observer, req, inner).await) })
    }
}

/// Runs one request under its correlation id and span, and records how it went.
async fn observe<S>(observer: &Observer, mut req: Request, mut next: S) -> Response
where
    S: tower::Service<Request, Response: IntoObserved, Error = Infallible>,
{
    let start = Instant::now();
    let method = req.method().clone();
    let template = req.extensions().get::<MatchedPath>().cloned();
    let id = CorrelationId::from_headers(req.headers()).unwrap_or_else(CorrelationId::generate);
    // The handler finds the id as the task's current one (`CorrelationId::current`), not among
    // the request's extensions: the first extension of a request allocates their map.
    req.headers_mut().insert(correlation::NAME, id.header_value());
    // Named by the route template (the gateway's proxied requests have none: the method alone).
    let span_name = match (&template, crate::trace::enabled()) {
        (_, false) => String::new(),
        (Some(template), true) => format!("{method} {}", template.as_str()),
        (None, true) => method.to_string(),
    };
    let span = tracing::info_span!(
        "request",
        service = observer.service,
        correlation_id = %id,
        method = %method,
        route = template.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
        otel.kind = "server",
        otel.name = span_name.as_str(),
        http.response.status_code = tracing::field::Empty,
    );
    // A caller inside the system continues its trace; a client at the edge only when trusted.
    if crate::trace::enabled()
        && (observer.accept_deadlines || crate::trace::trusts_client_traceparent())
        && let Some(parent) = crate::trace::context::from_headers(req.headers())
    {
        crate::trace::context::set_remote_parent(&span, parent);
    }

    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = declared_len.is_some_and(|len| len > observer.body_limit as u64);

    let grpc = grpc::is_grpc(&req);
    let sent = if observer.accept_deadlines {
        caller_deadline(req.headers())
    } else {
        None
    };
    let limit = earliest(sent, observer.timeout.map(Deadline::after));
    // Boxed once: the correlation scope and the span then wrap a pointer, not the request's
    // whole state, which each wrapper would otherwise copy as it is built and awaited.
    let work = Box::pin(async move {
        if too_large {
            return (
                Problem::payload_too_large(observer.body_limit).into_response(),
                None,
            );
        }
        if sent.is_some_and(Deadline::is_expired) {
            tracing::info!("the caller's deadline passed before the request started; not run");
            return (deadline_exceeded(grpc), None);
        }
        let run = move |req| async move {
            match next.call(req).await {
                Ok(response) => response.into_observed(),
                Err(never) => match never {},
            }
        };
        let Some(limit) = limit else {
            return run(req).await;
        };
        let run = if observer.accept_deadlines {
            req.extensions_mut().insert(limit);
            Either::Left(limit.scope(run(req)))
        } else {
            Either::Right(run(req))
        };
        match tokio::time::timeout_at(limit.instant(), run).await {
            Ok(observed) => observed,
            Err(_) if sent == Some(limit) => {
                tracing::warn!("the caller's deadline passed; request stopped");
                (deadline_exceeded(grpc), None)
            }
            Err(_) => {
                let timeout_ms = observer.timeout.unwrap_or_default().as_millis();
                tracing::warn!(timeout_ms, "request timed out");
                (timed_out(grpc), None)
            }
        }
    });
    let (mut response, label) = id.clone().scope(work).instrument(span.clone()).await;

    response
        .headers_mut()
        .insert(correlation::NAME, id.header_value());
    let label = label.or_else(|| {
        response
            .extensions()
            .get::<RouteLabel>()
            .map(|l| Arc::clone(&l.0))
    });
    let route = match (label, template) {
        (Some(label), _) => RouteName::Shared(label),
        (None, Some(template)) => RouteName::Template(template),
        (None, None) => RouteName::Static(UNMATCHED),
    };
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    observer.metrics.observe(&method, route, status, elapsed);
    span.record("http.response.status_code", status);
    let _entered = span.enter();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    if response.status().is_server_error() {
        tracing::warn!(status, duration_ms, "request failed");
    } else {
        tracing::info!(status, duration_ms, "request handled");
    }
    response
}
