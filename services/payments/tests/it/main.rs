//! Integration tests of `mercato-payments`. The sandbox and the provider adapter are tested
//! over real HTTP; everything that touches a database or the bus runs twice, as `sqlite::name`
//! (SQLite and the embedded bus) and `postgres::name` (PostgreSQL and a private NATS server),
//! with the real service on a loopback port talking to a real sandbox on another.
//!
//! - `support`: `spawn_app()`, the saga's side (commands out, answers in), the sandbox client.
//! - `sandbox`: every test card and the idempotency rules, over HTTP.
//! - `provider`: the adapter against the sandbox: classification and real timeouts.
//! - `charges`: captured, declined, flaky, hanging, duplicated and invalid commands.
//! - `refunds`: late captures after a refund request, refunds once, refunds before charges.
//! - `restart`: a charge in flight survives a stop and a crash, and is charged once.
//! - `replicas`: two instances share the work and charge each order once.
//! - `pact`: the provider client against a provider answering from payments' pact with it.
//! - `api`: `GET /api/payments/{order_id}`, readiness and metrics.

mod api;
mod charges;
mod pact;
mod provider;
mod refunds;
mod replicas;
mod restart;
mod sandbox;
mod support;
