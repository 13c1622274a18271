//! Integration tests of `mercato-inventory`: the real service on a loopback port over a fresh
//! database and a private bus, driven over HTTP, gRPC and the bus. Every test runs twice: as
//! `sqlite::name` (SQLite and the embedded bus) and `postgres::name` (PostgreSQL and NATS
//! JetStream).
//!
//! - `support`: `spawn_app()`, the saga's commands, and a reader of inventory's answers.
//! - `catalogue`: listing, paging and reading products; operations endpoints.
//! - `admin`: stock and price changes, who may make them, and `ProductChanged`.
//! - `reservations`: reserve, release and commit, all or nothing, once each.
//! - `expiry`: holds that run out, and committing one that did.
//! - `concurrency`: many orders racing for little stock on two replicas.
//! - `grpc`: `GetProducts` on the HTTP listener.
//! - `mtls`: `GetProducts` with `[tls]` on: only orders' certificate is served.

mod admin;
mod catalogue;
mod concurrency;
mod expiry;
mod grpc;
mod mtls;
mod reservations;
mod support;
