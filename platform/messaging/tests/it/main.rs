//! Integration tests of `mercato-messaging` against real brokers.
//!
//! Every bus test runs on both backends through `bus_tests!`, as `embedded::name` (a SQLite file
//! in a temporary directory) and `nats::name` (a `nats-server` of its own on a free port, which
//! the test can stop and start again).
//!
//! - `support`: the per-test broker, the test event, draining a consumer.
//! - `broadcast`: subscriptions that every subscriber gets, with gaps after a broker restart.
//! - `bus`: the behaviour suite of the bus: delivery, dedup, groups, redelivery, dead letters,
//!   restarts, lag and order.
//! - `retention`: what the bus log, the inbox and the outbox delete once their windows pass, and
//!   what they keep.
//! - `claims`: what a member keeps while it holds it, and what comes back after a crash or an
//!   abandoned fetch.

#[macro_use]
mod support;
mod broadcast;
mod bus;
mod claims;
mod pipeline;
mod retention;
