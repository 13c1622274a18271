//! Operator tasks run from the CLI against identity's own database.

use crate::accounts::{AccountError, Accounts};
use crate::credentials;
use crate::domain::{DisplayName, Email, Password, Role};
use crate::store;

/// What `mercato admin create` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    Created {
        id: String,
    },
    /// The account existed; it now has the admin role (its password is unchanged).
    Promoted {
        id: String,
    },
}

/// Creates an admin account, or gives an existing account the admin role.
///
/// # Errors
/// [`AccountError::Invalid`] for a bad email or a password that breaks the policy.
pub async fn create_admin(
    accounts: &Accounts,
    email: &str,
    password: &str,
) -> Result<AdminOutcome, AccountError> {
    let email = Email::parse(email).map_err(|m| AccountError::Invalid(vec![("email", m)]))?;
    if let Some(id) = store::find_user_id(accounts.db.pool(), &email).await? {
        let mut tx = accounts.db.begin().await?;
        store::grant_role(&mut tx, &id, Role::Admin).await?;
        tx.commit().await?;
        return Ok(AdminOutcome::Promoted { id });
    }
    let password = Password::parse(password, Some(email.as_str()))
        .map_err(|m| AccountError::Invalid(vec![("password", m)]))?;
    let name = DisplayName::parse("Administrator").map_err(|m| AccountError::Invalid(vec![("name", m)]))?;
    let hash = credentials::hash(password.expose().to_owned()).await?;
    let user = accounts
        .create_user(&email, &name, &hash, &[Role::Customer, Role::Admin])
        .await?;
    Ok(AdminOutcome::Created { id: user.id })
}
