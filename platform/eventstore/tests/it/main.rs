//! Integration tests of `mercato-eventstore` against real databases.
//!
//! Every test runs on both backends through `mercato_testkit::backend_tests!`, as
//! `sqlite::name` and `postgres::name`.
//!
//! - `support`: a migrated store per test, test events, two small projections.
//! - `append`: expected versions, conflicts, racing writers, stale snapshots, refused batches.
//! - `read`: stream order, global order and paging, malformed stored events.
//! - `outbox`: events and outbox rows commit or roll back together.
//! - `projections`: catch-up versus rebuild, failures, checkpoints, concurrent runners, and a
//!   projection that reads while writers append (the late-commit gap).

mod append;
mod outbox;
mod projections;
mod read;
mod support;
