//! Integration tests of `mercato-notifications`: the real service on a loopback port over a
//! fresh database and bus, fed events the way the other services publish them, read through
//! its HTTP API, with a real SMTP conversation against a sink. Every test runs twice, as
//! `sqlite::name` (SQLite and the embedded bus) and `postgres::name` (PostgreSQL and a private
//! NATS JetStream server).
//!
//! - `support`: `spawn_app()`, publishing helpers, and reading the delivery log.
//! - `smtp_sink`: a tiny SMTP server that keeps what it accepts and can answer `451`.
//! - `welcome`: identity's registration becomes a welcome, by email when preferences allow.
//! - `orders`: order messages rendered in the customer's language; channels honoured.
//! - `delivery`: exactly-once effects under redelivery, retries, permanent failure, replicas
//!   and crashed workers.
//! - `api`: the mailbox: pagination, validation, isolation between customers, authentication,
//!   metrics.

mod api;
mod delivery;
mod orders;
mod smtp_sink;
mod support;
mod welcome;
