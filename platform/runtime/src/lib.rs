//! The runtime every Mercato service shares, so that all of them behave alike on the wire.
//!
//! - [`app`]: a built service (server, background loops, closers) and how it runs and stops.
//! - [`server`]: binds the listener, adds `/health`, `/ready` and `/metrics`, applies the common
//!   middleware, and shuts down gracefully (readiness off, listener closed, in-flight work drained).
//! - [`observe`]: per-request correlation id, tracing span, RED metrics, access log, body-size and
//!   time limits, and the caller's deadline (`x-request-deadline-ms`), which the handler's calls
//!   inherit.
//! - [`problem`] and [`extract`]: every error a client can cause becomes `application/problem+json`.
//! - [`failure`]: the one answer to a failure the client did not cause (`503` or `500`).
//! - [`page`]: `page_size` and the opaque `page_token` of every list.
//! - [`health`]: readiness checks, each bounded by its own timeout.
//! - [`metrics`]: the Prometheus registry and the HTTP metrics.
//! - [`auth`]: the verified caller of a request, from its bearer token.
//! - [`client`]: the HTTP client services use to call each other (correlation id, and the guards).
//! - [`grpc`]: a tonic channel behind the same guards, and the server's gRPC refusals.
//! - [`service_token`]: service tokens fetched, cached and sent by both clients, and required by
//!   internal routes.
//! - [`guard`]: the guards every call to another service passes: budgeted retries, a circuit
//!   breaker and a bulkhead per target, a timeout bounded by the deadline, with their metrics.
//! - [`settings`]: the one convention for checking settings ([`Validate`], naming the key).
//! - [`telemetry`]: logs (JSON lines that name the trace, or readable text in a terminal).
//! - [`trace`]: OpenTelemetry spans joined by `traceparent`, exported over OTLP and kept in memory.
//! - [`shutdown`]: waiting for Ctrl-C or SIGTERM.
//! - [`background`]: the loops a service runs beside its server, stopped with it.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod background;
pub mod client;
pub mod config;
pub mod correlation;
pub mod extract;
pub mod failure;
pub mod grpc;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod observe;
pub mod page;
pub mod problem;
pub mod server;
pub mod service_token;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use app::App;
pub use auth::Caller;
pub use background::Background;
pub use client::ServiceClient;
pub use config::{ClientConfig, HttpConfig};
pub use extract::Json;
pub use failure::Transient;
pub use grpc::GuardedChannel;
pub use guard::ClientMetrics;
pub use health::Readiness;
pub use problem::{FieldError, Problem};
pub use server::{Server, Service};
pub use settings::{InvalidSetting, Validate};

pub use mercato_resilience as resilience;
pub use prometheus_client::registry::Registry;
pub use tokio_util::sync::CancellationToken;
