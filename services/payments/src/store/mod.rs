//! Payments' SQL: one row per order, written once for SQLite and PostgreSQL.
//!
//! - [`payments`]: the row as stored, and reading it.
//! - [`requests`]: what the saga's commands record: a charge to make, a refund asked for.
//! - [`leases`]: the worker's side. The worker owns a row while it talks to the provider through
//!   a lease: claiming sets `next_attempt_at` into the future where the row is due, and every
//!   write after the call is conditional on that same value, so a replica whose lease ran out
//!   (and was taken over) can never overwrite the newer owner's result.

mod leases;
mod payments;
mod requests;

pub use leases::{
    Claim, capture, claim, due, fail, put_back_unsent, refunded, release, report_unknown, retry_at,
};
pub use payments::{Payment, find};
pub use requests::{record_charge, request_refund};

use mercato_storage::Migration;

/// Payments' schema: its table, then the platform's outbox and inbox.
pub const MIGRATIONS: &[Migration] = &[
    Migration::new(1, "payments", include_str!("../../migrations/0001_payments.sql")),
    Migration::new(
        2,
        "unknown_outcomes",
        include_str!("../../migrations/0002_unknown_outcomes.sql"),
    ),
    mercato_messaging::outbox::MIGRATION,
    mercato_messaging::relay::MIGRATION,
    mercato_messaging::relay::RETENTION_MIGRATION,
    mercato_messaging::inbox::MIGRATION,
    mercato_messaging::inbox::RETENTION_MIGRATION,
];
