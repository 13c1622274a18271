//! Integration tests of `mercato-runtime`: a real server on a loopback port, driven over HTTP.
//!
//! - `support`: `spawn_app()` and the test service's routes.
//! - `correlation`: the `x-correlation-id` a request runs under.
//! - `health`: `/health` and `/ready`.
//! - `metrics`: `/metrics` and its route labels.
//! - `problems`: every error a client can cause is `application/problem+json`.
//! - `shutdown`: readiness off, listener closed, in-flight requests drained.
//! - `client`: `ServiceClient` timeouts and correlation id propagation.

mod client;
mod correlation;
mod health;
mod metrics;
mod problems;
mod shutdown;
mod support;
