//! End-to-end tests of the whole system: the services started the way `mercato` starts them,
//! reached through the gateway over loopback HTTP.
//!
//! - `access`: the rendered NATS users and Redis ACL rules, enforced by a real server.
//! - `support`: a system in this process on a fresh database, and `mercato` child processes.
//! - `crash`: SIGKILL with orders in flight, `mercato up` or services of the distributed
//!   system, and a restart at once: every order still confirmed.
//! - `console`: the operations console's security (cookie, CSRF, origin, roles, CSP, audit),
//!   and in `console::browser` its pages driven in headless Chromium.
//! - `flows`: register, token, refresh, `me` through the gateway, with the bad inputs and tokens.
//! - `restart`: data and signing keys survive a restart; key rotation through the gateway.
//! - `cache`: a price change reaches a second orders instance through invalidation, not the TTL.
//! - `deploy`: `mercato deploy switch` moves inventory to a second instance and back.
//! - `contracts`: every event the system publishes fits its schema and every consumer's pact;
//!   a renamed field fails the pact, naming the consumer and the field.
//! - `openapi`: the served OpenAPI document is the generated one; undeclared methods answer 405.
//! - `loadgen`: `mercato loadgen` follows each order with the long poll, reports the saga's
//!   phases, and counts refusals past the backlog bound apart from errors.
//! - `instances`: two inventory processes behind a gateway process; one is killed under load.
//! - `processes`: every service as its own `mercato serve` process on PostgreSQL and NATS,
//!   `mercato up` as a process, signals, and the CLI's other commands.
//! - `service_tokens`: the checkout with service tokens required, in one process on both
//!   backends and as separate processes; internal APIs refuse calls without a token.
//! - `observability`: every metric `deploy/observability` names is exposed.
//! - `tracing`: one order's trace as a real OTLP collector receives it from a `mercato up`
//!   process, the log lines that name it, `mercato trace`, and a collector that is away.
//! - `zero_trust`: every service its own process with TLS on everywhere and service tokens
//!   required: a checkout over HTTPS, no port serves a stranger, and the console signs in and
//!   reads every service.

mod access;
mod cache;
mod checkout;
mod console;
mod contracts;
mod crash;
mod customers;
mod deploy;
mod faults;
mod flows;
mod instances;
mod k8s;
mod loadgen;
mod observability;
mod openapi;
mod operations;
mod outage;
mod processes;
mod restart;
mod service_tokens;
mod support;
mod tracing;
mod zero_trust;
