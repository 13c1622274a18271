//! Payments' SQL: one row per order, written once for SQLite and PostgreSQL.
//!
//! - [`payments`]: the row as stored, and reading it.
//! - [`requests`]: what the saga's commands record: a charge to make, a refund asked for.
//! - [`attempts`]: the log of provider calls, one row per attempt, written with its answer.
//! - [`leases`]: the worker's side. The worker owns a row while it talks to the provider through
//!   a lease: claiming sets `next_attempt_at` into the future where the row is due, and every
//!   write after the call is conditional on that same value, so a replica whose lease ran out
//!   (and was taken over) can never overwrite the newer owner's result.

mod attempts;
mod leases;
mod payments;
mod requests;

pub use attempts::{Attempt, Call, attempts, record_attempt};
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
    Migration::new(
        3,
        "provider_attempts",
        include_str!("../../migrations/0003_provider_attempts.sql"),
    ),
    mercato_messaging::outbox::MIGRATION,
    mercato_messaging::relay::MIGRATION,
    mercato_messaging::relay::RETENTION_MIGRATION,
    mercato_messaging::inbox::MIGRATION,
    mercato_messaging::inbox::RETENTION_MIGRATION,
];
