use mercato_storage::sqlx::{self, Any, AnyPool, Executor, Row as _};
use mercato_storage::{StorageError, Tx};

use crate::domain::{DisplayName, Email, Role, User};

/// A user about to be stored.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a Email,
    pub name: &'a DisplayName,
    pub password_hash: &'a str,
    pub created_at: i64,
}

/// What a password login needs.
#[derive(Debug)]
pub struct Credentials {
    pub user_id: String,
    pub password_hash: String,
}

/// Stores a user with its roles.
///
/// # Errors
/// [`StorageError::Conflict`] when the email is taken.
pub async fn insert_user(tx: &mut Tx, user: &NewUser<'_>, roles: &[Role]) -> Result<(), StorageError> {
    sqlx::query("INSERT INTO users (id, email, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(user.id)
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(user.password_hash)
        .bind(user.created_at)
        .execute(&mut **tx)
        .await?;
    for role in roles {
        grant_role(tx, user.id, *role).await?;
    }
    Ok(())
}

/// Gives `user_id` a role; granting one it has already changes nothing.
///
/// # Errors
/// The database failed.
pub async fn grant_role(tx: &mut Tx, user_id: &str, role: Role) -> Result<(), StorageError> {
    sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .bind(role.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// # Errors
/// The database failed.
pub async fn find_credentials(pool: &AnyPool, email: &Email) -> Result<Option<Credentials>, StorageError> {
    let row = sqlx::query("SELECT id, password_hash FROM users WHERE email = $1")
        .bind(email.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| Credentials {
        user_id: r.get("id"),
        password_hash: r.get("password_hash"),
    }))
}

/// # Errors
/// The database failed.
pub async fn find_user_id(pool: &AnyPool, email: &Email) -> Result<Option<String>, StorageError> {
    let row = sqlx::query("SELECT id FROM users WHERE email = $1")
        .bind(email.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.get("id")))
}

/// # Errors
/// The database failed.
pub async fn user_roles<'e, E>(executor: E, user_id: &str) -> Result<Vec<Role>, StorageError>
where
    E: Executor<'e, Database = Any>,
{
    let rows = sqlx::query("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
        .bind(user_id)
        .fetch_all(executor)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Role::from_name(r.get::<&str, _>("role")))
        .collect())
}

/// # Errors
/// The database failed, or holds a row that no longer parses.
pub async fn find_user(pool: &AnyPool, user_id: &str) -> Result<Option<User>, StorageError> {
    let Some(row) = sqlx::query("SELECT id, email, name FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let corrupt = |what: &str| StorageError::Config(format!("stored user {user_id} has an invalid {what}"));
    let email = Email::parse(row.get("email")).map_err(|_| corrupt("email"))?;
    let name = DisplayName::parse(row.get("name")).map_err(|_| corrupt("name"))?;
    let roles = user_roles(pool, user_id).await?;
    Ok(Some(User {
        id: row.get("id"),
        email,
        name,
        roles,
    }))
}
