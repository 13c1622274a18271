//! Integration tests of `mercato-storage` against real databases.
//!
//! Every test that touches a database runs on both backends through
//! `mercato_testkit::backend_tests!`, as `sqlite::name` and `postgres::name`.
//!
//! - `support`: connecting to a test database, a database that does not exist yet, small queries.
//! - `connect`: URL checks, creating what is missing, SQLite pragmas, unreachable servers, `ping`.
//! - `migrations`: order, idempotence, edited and failing migrations, concurrent start-up.
//! - `errors`: how database errors are classified (conflict, transient, neither).
//! - `group_commit`: SQLite's queued writers sharing a physical commit: one commit for a group,
//!   a member that fails or rolls back alone, a failed commit failing every member; on both
//!   backends, concurrent writers that roll back and readers that see a commit once it returns.
//! - `transactions`: concurrent write transactions (in turn on SQLite, never busy), readers beside
//!   an open writer, rollback on drop.
//! - `values`: what survives a round trip through the `Any` driver.

mod connect;
mod errors;
mod group_commit;
mod migrations;
mod support;
mod transactions;
mod values;
