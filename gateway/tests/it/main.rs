//! Integration tests of `mercato-gateway`: the real gateway on a loopback port, with a real JWKS
//! server and real upstreams behind it, driven over HTTP.
//!
//! - `support`: `spawn_gateway()`, the JWKS server, the echoing upstreams, token helpers.
//! - `adaptive`: requests past an upstream's adaptive concurrency limit shed with `503`.
//! - `admin_state`: admin changes kept in a file or shared through Redis (`admin_state::redis::`).
//! - `routing`: prefixes, path and query preservation, the gateway's own endpoints, metrics.
//! - `auth`: bearer tokens on authenticated routes and every way a token is refused.
//! - `edge`: protocol abuse over raw TCP: smuggling forms, slow heads and bodies, header limits,
//!   HTTP/2 rapid reset.
//! - `headers`: identity headers, `x-forwarded-*`, correlation ids, hop-by-hop headers.
//! - `jwks`: key rotation, bounded refetches, an unreachable key set.
//! - `mutual_tls`: public TLS for clients with rotation; `https://` upstreams over mutual TLS:
//!   the gateway's certificate presented,
//!   an upstream whose certificate names another service refused, health checks over TLS.
//! - `preauth`: forged-token floods: failures counted per address, refused before any check.
//! - `rbac`: route roles and method/path rules: 401 without a token, 403 without the role.
//! - `rate_limit`: GCRA per subject or IP and route class, on a manual clock; the Redis suite
//!   (`rate_limit::redis::`) needs Redis at 127.0.0.1:6379.
//! - `upstream_faults`: upstreams down or silent, body limits, large bodies both ways.
//! - `upstream_connections`: upstream connections kept, reused, and dropped when closed.
//! - `instances`: upstream instances a test can slow, fail, make unready, kill and restart.
//! - `balancing`: P2C and round robin, ejection by an instance's breaker, active health checks,
//!   the bulkhead, and the admin API for instances.
//! - `blue_green`: switches and weight splits under load, with automatic rollback.
//! - `trusted_proxies`: whose `X-Forwarded-For`/`Forwarded` is believed, for limits and upstreams.
//! - `resilience`: the circuit breaker per instance, retries of idempotent requests, per-route
//!   timeouts and the deadline sent upstream.

mod adaptive;
mod admin_state;
mod auth;
mod balancing;
mod blue_green;
mod edge;
mod headers;
mod instances;
mod jwks;
mod mutual_tls;
mod preauth;
mod rate_limit;
mod rbac;
mod resilience;
mod routing;
mod support;
mod trusted_proxies;
mod upstream_connections;
mod upstream_faults;
