//! Notifications' SQL: the local copy of each customer's contact details and preferences, the
//! notifications themselves (one row per event and channel), and the delivery log of every
//! email attempt. One SQL for both backends.
//!
//! - [`customers`]: what notifications knows of each customer, newest stream position wins.
//! - [`mailbox`]: writing a notification once per event and channel, and reading the mailbox.
//! - [`emails`]: the email queue. A row moves `pending` → `sending` (claimed by one worker, with
//!   a lease) → `sent`, or back to `pending` with a later `next_attempt_at`, or to `failed`.
//!   Every transition is a conditional `UPDATE`, so replicas sharing the database never act on
//!   the same row at once. A mailbox row is written `delivered`.
//! - [`deliveries`]: every notification of a customer and the attempts logged for it.

mod customers;
mod deliveries;
mod emails;
mod mailbox;

pub use customers::{CustomerCopy, customer, seed_customer, upsert_customer};
pub use deliveries::{Attempt, Delivery, attempts, deliveries, deliveries_for_events};
pub use emails::{
    EmailJob, Finish, INTERRUPTED, OUTCOME_UNKNOWN, Recovered, claim, due_emails, finish, mark_committing,
    recover_stale,
};
pub use mailbox::{Cursor, MailboxItem, NewNotification, insert_notification, mailbox_page};

use mercato_storage::Migration;

/// Notifications' schema: its tables, then the platform's inbox.
pub const MIGRATIONS: &[Migration] = &[
    Migration::new(
        1,
        "notifications",
        include_str!("../../migrations/0001_notifications.sql"),
    ),
    mercato_messaging::inbox::MIGRATION,
    mercato_messaging::inbox::RETENTION_MIGRATION,
];

/// States of a notification row.
pub mod state {
    /// A mailbox message: readable at once.
    pub const DELIVERED: &str = "delivered";
    /// An email waiting for its (next) attempt.
    pub const PENDING: &str = "pending";
    /// An email a worker has claimed and is sending.
    pub const SENDING: &str = "sending";
    /// The mail server accepted the email.
    pub const SENT: &str = "sent";
    /// Given up: attempts exhausted, refused for good, or the outcome unknown.
    pub const FAILED: &str = "failed";
}
