//! Identity's SQL, the same on SQLite and PostgreSQL.

mod refresh_tokens;
mod users;

pub use refresh_tokens::{RefreshRecord, find_refresh, insert_refresh, mark_used, revoke_family};
pub use users::{
    Credentials, NewUser, find_credentials, find_user, find_user_id, grant_role, insert_user, user_roles,
};

use mercato_storage::Migration;

/// Identity's schema, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration::new(1, "users", include_str!("../../migrations/0001_users.sql")),
    mercato_messaging::outbox::MIGRATION,
    mercato_messaging::relay::MIGRATION,
    mercato_messaging::relay::RETENTION_MIGRATION,
];
