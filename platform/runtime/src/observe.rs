//! The middleware every request passes first: correlation id, span, limits, metrics, access log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;
use tracing::Instrument as _;

use crate::correlation::{CorrelationId, HEADER};
use crate::metrics::HttpMetrics;
use crate::problem::Problem;

/// The route label for requests that matched no route (bounded metric cardinality).
pub const UNMATCHED: &str = "unmatched";

/// A route label a handler sets on its response when no router template names the route (the
/// gateway labels proxied requests with the route prefix they matched).
#[derive(Debug, Clone)]
pub struct RouteLabel(pub Arc<str>);

/// What the middleware needs.
#[derive(Debug, Clone)]
pub struct Observer {
    pub service: &'static str,
    pub metrics: HttpMetrics,
    pub body_limit: usize,
    pub timeout: Option<Duration>,
}

/// Runs one request under its correlation id and span, and records how it went.
pub async fn observe(State(observer): State<Observer>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let id = CorrelationId::from_headers(req.headers()).unwrap_or_else(CorrelationId::generate);
    req.headers_mut().insert(HEADER, id.header_value());
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!(
        "request",
        service = observer.service,
        correlation_id = %id,
        method = %method,
        route = template.as_deref().unwrap_or(UNMATCHED),
    );

    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = declared_len.is_some_and(|len| len > observer.body_limit as u64);

    let work = async move {
        if too_large {
            return Problem::payload_too_large(observer.body_limit).into_response();
        }
        match observer.timeout {
            Some(limit) => match tokio::time::timeout(limit, next.run(req)).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::warn!(timeout_ms = limit.as_millis(), "request timed out");
                    Problem::unavailable("the request took too long and was stopped", 1).into_response()
                }
            },
            None => next.run(req).await,
        }
    };
    let mut response = id.clone().scope(work).instrument(span.clone()).await;

    response.headers_mut().insert(HEADER, id.header_value());
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|l| l.0.to_string())
        .or(template)
        .unwrap_or_else(|| UNMATCHED.to_owned());
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    observer.metrics.observe(method.as_str(), &route, status, elapsed);
    let _entered = span.enter();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    if response.status().is_server_error() {
        tracing::warn!(status, duration_ms, "request failed");
    } else {
        tracing::info!(status, duration_ms, "request handled");
    }
    response
}
