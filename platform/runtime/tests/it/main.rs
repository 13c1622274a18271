//! Integration tests of `mercato-runtime`: a real server on a loopback port, driven over HTTP.
//!
//! - `support`: `spawn_app()` and the test service's routes.
//! - `correlation`: the `x-correlation-id` a request runs under.
//! - `health`: `/health` and `/ready`.
//! - `metrics`: `/metrics` and its route labels.
//! - `problems`: every error a client can cause is `application/problem+json`.
//! - `shutdown`: readiness off, listener closed, in-flight requests drained.
//! - `client`: `ServiceClient`: correlation id, deadline propagation, breaker, retry budget,
//!   bulkhead, against real servers.
//! - `deadline`: the caller's deadline on the server: refused when passed, handler stopped,
//!   visible to the handler.
//! - `tls`: mutual TLS: callers named and checked against an allow list, refused peers, rotation.

mod client;
mod correlation;
mod deadline;
mod health;
mod metrics;
mod problems;
mod shutdown;
mod support;
mod tls;
