//! The local copy of each customer: contact details and channel preferences from customers'
//! events (identity's registration seeds it), kept at the newest stream position seen.

use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{StorageError, Tx};

/// What notifications knows about a customer, from customers' and identity's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerCopy {
    pub customer_id: String,
    pub email: String,
    pub name: String,
    pub email_enabled: bool,
    pub sms_enabled: bool,
    pub marketing_opt_in: bool,
    /// The customer's language tag as customers holds it (`de`, `pt-BR`).
    pub locale: String,
}

/// Records a customer seen only through identity's registration: default preferences, and
/// version 0 so that any event from customers replaces it.
///
/// # Errors
/// The database failed.
pub async fn seed_customer(
    tx: &mut Tx,
    id: &str,
    email: &str,
    name: &str,
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO notification_customers
             (customer_id, email, name, email_enabled, sms_enabled, marketing_opt_in, locale, version, updated_at)
         VALUES ($1, $2, $3, 1, 0, 0, 'en', 0, $4)
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(id)
    .bind(email)
    .bind(name)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the customer as of stream position `version`, unless a newer position is stored.
///
/// # Errors
/// The database failed.
pub async fn upsert_customer(
    tx: &mut Tx,
    copy: &CustomerCopy,
    version: i64,
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO notification_customers
             (customer_id, email, name, email_enabled, sms_enabled, marketing_opt_in, locale, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (customer_id) DO UPDATE SET email = $2, name = $3, email_enabled = $4,
             sms_enabled = $5, marketing_opt_in = $6, locale = $7, version = $8, updated_at = $9
         WHERE notification_customers.version < $8",
    )
    .bind(&copy.customer_id)
    .bind(&copy.email)
    .bind(&copy.name)
    .bind(i64::from(copy.email_enabled))
    .bind(i64::from(copy.sms_enabled))
    .bind(i64::from(copy.marketing_opt_in))
    .bind(&copy.locale)
    .bind(version)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The customer as notifications knows them, if at all.
///
/// # Errors
/// The database failed.
pub async fn customer<'e, E>(executor: E, id: &str) -> Result<Option<CustomerCopy>, StorageError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(
        "SELECT customer_id, email, name, email_enabled, sms_enabled, marketing_opt_in, locale
         FROM notification_customers WHERE customer_id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(CustomerCopy {
        customer_id: row.try_get("customer_id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        email_enabled: row.try_get::<i64, _>("email_enabled")? != 0,
        sms_enabled: row.try_get::<i64, _>("sms_enabled")? != 0,
        marketing_opt_in: row.try_get::<i64, _>("marketing_opt_in")? != 0,
        locale: row.try_get("locale")?,
    }))
}
