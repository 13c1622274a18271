//! The orders service on its own, on SQLite with the embedded bus and on PostgreSQL with NATS.
//! The test plays orders' peers over their real protocols: inventory's and customers' gRPC APIs
//! (a catalogue and the known customers), and inventory's and payments' answers on the bus.
//!
//! - `checkout`: the saga's happy path and each way it ends cancelled, with compensations of
//!   completed steps only, and answers delivered twice applied once.
//! - `funnel`: the checkout funnel's query uses the event log's index by time.
//! - `in_flight`: a reply decided on a remembered order that moved on since is decided again
//!   on the order as stored.
//! - `placing`: idempotency keys, ownership, listing, customer cancellation.
//! - `bad_input`: every invalid field named, unknown products, no profile, no token.
//! - `metrics`: orders by outcome and reason, phase times, compensations, timeouts and batch
//!   sizes from `/metrics`, counted once across a duplicate answer and a restart.
//! - `overload`: past `max_orders_in_flight` new orders get `503`; accepted ones all confirm.
//! - `long_poll`: `GET /api/orders/{id}` waiting for a change, and its bad parameters.
//! - `read_model`: order rows written with each append, version-guarded, and equal to what the
//!   projection over the global log makes of the same events.

mod bad_input;
mod checkout;
mod funnel;
mod in_flight;
mod long_poll;
mod metrics;
mod overload;
mod placing;
mod read_model;
mod support;
mod timer;
