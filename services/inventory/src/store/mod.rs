//! Inventory's SQL: products with their stock, and reservations with their lines. One SQL for
//! both backends; every stock change is a conditional `UPDATE`, so the database itself refuses
//! to hold or sell units that are not there.

pub mod products;
pub mod reservations;

use mercato_storage::{Migration, StorageError};

/// Inventory's schema, then the platform's outbox and inbox.
pub const MIGRATIONS: &[Migration] = &[
    // Byte order for SKUs whatever the database's locale, so pages come in the same order on
    // both backends and a page token means the same thing on each.
    Migration::new(
        1,
        "catalogue",
        include_str!("../../migrations/0001_catalogue.sql"),
    )
    .with_postgres(include_str!("../../migrations/0001_catalogue.postgres.sql")),
    Migration::new(
        2,
        "reservations",
        include_str!("../../migrations/0002_reservations.sql"),
    ),
    mercato_messaging::outbox::MIGRATION,
    mercato_messaging::relay::MIGRATION,
    mercato_messaging::relay::RETENTION_MIGRATION,
    mercato_messaging::inbox::MIGRATION,
    mercato_messaging::inbox::RETENTION_MIGRATION,
];

/// A stored row that this build cannot read: it was written by something else, or corrupted.
fn corrupt(table: &str, key: &str, what: impl std::fmt::Display) -> StorageError {
    StorageError::Config(format!("{table} row {key:?} is malformed: {what}"))
}
