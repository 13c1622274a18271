//! The resilience toolkit the gateway and every internal HTTP/gRPC client use, as tower layers.
//!
//! A client stack is usually built outermost first, so that a retry is a whole new pass through
//! the breaker and the per-attempt timeout:
//!
//! ```text
//! Retry -> CircuitBreaker -> Timeout (+ deadline header) -> Bulkhead -> transport
//! ```
//!
//! - [`error`]: [`ResilienceError`], the one error every layer returns: the inner error, or the
//!   reason a layer refused or cut the call; and [`ConfigError`] for invalid settings.
//! - [`circuit_breaker`]: `Closed` / `Open` / `HalfOpen` over a count-based sliding window, opening
//!   on failure rate or slow-call rate; transitions are counted in Prometheus and logged.
//! - [`retry`]: full-jitter exponential backoff for retryable requests and transient outcomes only,
//!   capped by a Linkerd-style retry budget ([`tower::retry::budget::TpsBudget`]).
//! - [`deadline`]: the request [`Deadline`], carried in extensions, a task-local and the
//!   `x-request-deadline-ms` header, and the server-side layer that accepts it.
//! - [`timeout`]: a per-call timeout that never waits past the caller's deadline.
//! - [`bulkhead`]: a concurrency limit with a bounded, time-limited wait queue.
//! - [`classify`]: ready-made classifiers and predicates for HTTP.
//! - [`layered`]: the tower plumbing written once: each layer's value is a
//!   [`Policy`](layered::Policy) for one call, and [`Layered`](layered::Layered) is the one
//!   `Service` that serves any of them over the service below.
//! - [`register_metrics!`]: a table of Prometheus metrics registered a line each (the breakers'
//!   and every other metrics struct of the workspace).
//!
//! Every layer takes and returns `Result<Response, ResilienceError<E>>`, so layers stack without
//! nesting error types; the transport at the bottom is lifted with
//! `tower::ServiceBuilder::map_err(ResilienceError::Inner)`.
#![forbid(unsafe_code)]

pub mod bulkhead;
pub mod circuit_breaker;
pub mod classify;
pub mod deadline;
pub mod error;
pub mod layered;
mod metrics;
pub mod retry;
pub mod timeout;

pub use bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer};
pub use circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakerMetrics, CircuitBreakerService,
    CircuitState,
};
pub use deadline::{AcceptDeadline, AcceptDeadlineLayer, Deadline, DeadlineCarrier};
pub use error::{ConfigError, ResilienceError};
pub use retry::{Backoff, Replay, Retry, RetryConfig, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};
