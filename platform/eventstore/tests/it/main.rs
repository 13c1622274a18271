//! Integration tests of `mercato-eventstore` against real databases.
//!
//! Every test runs on both backends through `mercato_testkit::backend_tests!`, as
//! `sqlite::name` and `postgres::name`.
//!
//! - `support`: a migrated store per test, test events, two small projections.
//! - `append`: expected versions, conflicts, racing writers, stale snapshots, refused batches.
//! - `read`: stream order, global order and paging, malformed stored events.
//! - `outbox`: events and outbox rows commit or roll back together.
//! - `commit_order`: the global log in commit order: a late commit with a lower position, and
//!   databases from before the order.
//! - `projections`: catch-up versus rebuild, failures, checkpoints, concurrent runners, and a
//!   projection that reads while eight writers append (each event once, in stream order).

mod append;
mod commit_order;
mod outbox;
mod projections;
mod read;
mod support;
