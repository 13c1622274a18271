//! Customers' SQL: the profile read model, kept by the `customers.profiles` projection.

use mercato_contracts::customers as contract;
use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Migration, StorageError, Tx, now_millis};

use crate::domain::Customer;
use crate::events::{address_out, preferences_out};

/// Customers' schema: its read model, then the platform's event store, outbox and inbox.
pub const MIGRATIONS: &[Migration] = &[
    Migration::new(1, "profiles", include_str!("../migrations/0001_profiles.sql")),
    mercato_messaging::outbox::MIGRATION,
    mercato_messaging::relay::MIGRATION,
    mercato_messaging::relay::RETENTION_MIGRATION,
    mercato_messaging::inbox::MIGRATION,
    mercato_messaging::inbox::RETENTION_MIGRATION,
    mercato_eventstore::MIGRATION,
    mercato_eventstore::COMMIT_ORDER,
];

/// A profile as the read model holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: String,
    pub email: String,
    pub name: String,
    pub addresses: Vec<contract::Address>,
    pub preferences: contract::Preferences,
    pub version: i64,
}

impl Profile {
    #[must_use]
    pub fn of(customer: &Customer) -> Self {
        Self {
            id: customer.id.clone(),
            email: customer.email.clone(),
            name: customer.name.clone(),
            addresses: customer.addresses.iter().map(address_out).collect(),
            preferences: preferences_out(&customer.preferences),
            version: customer.version,
        }
    }
}

fn corrupt(id: &str, e: &serde_json::Error) -> StorageError {
    StorageError::Config(format!("profile {id} holds malformed JSON: {e}"))
}

/// # Errors
/// The database failed or holds a malformed row.
pub async fn profile<'e, E>(executor: E, id: &str) -> Result<Option<Profile>, StorageError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let Some(row) = sqlx::query(
        "SELECT id, email, name, addresses, preferences, version FROM customer_profiles WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?
    else {
        return Ok(None);
    };
    let addresses: String = row.get("addresses");
    let preferences: String = row.get("preferences");
    Ok(Some(Profile {
        id: row.get("id"),
        email: row.get("email"),
        name: row.get("name"),
        addresses: serde_json::from_str(&addresses).map_err(|e| corrupt(id, &e))?,
        preferences: serde_json::from_str(&preferences).map_err(|e| corrupt(id, &e))?,
        version: row.get("version"),
    }))
}

/// Writes the profile unless the stored one is as new or newer (replays change nothing).
///
/// # Errors
/// The database failed.
pub async fn upsert(tx: &mut Tx, profile: &Profile) -> Result<(), StorageError> {
    let addresses = serde_json::to_string(&profile.addresses).map_err(|e| corrupt(&profile.id, &e))?;
    let preferences = serde_json::to_string(&profile.preferences).map_err(|e| corrupt(&profile.id, &e))?;
    sqlx::query(
        "INSERT INTO customer_profiles (id, email, name, addresses, preferences, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET email = $2, name = $3, addresses = $4, preferences = $5,
             version = $6, updated_at = $7
         WHERE customer_profiles.version < $6",
    )
    .bind(&profile.id)
    .bind(&profile.email)
    .bind(&profile.name)
    .bind(addresses)
    .bind(preferences)
    .bind(profile.version)
    .bind(now_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Empties the read model, for a rebuild.
///
/// # Errors
/// The database failed.
pub async fn clear(tx: &mut Tx) -> Result<(), StorageError> {
    sqlx::query("DELETE FROM customer_profiles")
        .execute(&mut **tx)
        .await?;
    Ok(())
}
