//! What identity does: register people, issue and refresh tokens, tell who a user is.
//!
//! Refresh tokens are opaque, stored only as SHA-256 hashes, single use, and grouped in families:
//! each refresh retires the presented token and issues the next one of its family; presenting a
//! retired token again means it was stolen or replayed, so the whole family is revoked.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mercato_contracts::identity::UserRegistered;
use mercato_messaging::{Context, Envelope, Outbox, outbox};
use mercato_runtime::correlation::CorrelationId;
use mercato_security::{Claims, TokenError, VerifierConfig};
use mercato_storage::{Db, StorageError, now_millis};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::credentials::{self, HashError};
use crate::domain::{DisplayName, Email, Password, Role, User};
use crate::keys::Keys;
use crate::store;

/// Why an account operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Fields that failed validation, with what is wrong with each.
    #[error("invalid fields: {0:?}")]
    Invalid(Vec<(&'static str, &'static str)>),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The OAuth `invalid_grant` error, with a description for the client.
    #[error("invalid grant: {0}")]
    InvalidGrant(&'static str),
    #[error("no such user")]
    UnknownUser,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// An access token and the refresh token that renews it.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

/// The account operations, over identity's database and keys.
#[derive(Debug, Clone)]
pub struct Accounts {
    pub(crate) db: Db,
    pub(crate) keys: Keys,
    auth: VerifierConfig,
    access_ttl: Duration,
    refresh_ttl: Duration,
    outbox: Outbox,
}

fn hash_refresh(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Accounts {
    #[must_use]
    pub fn new(
        db: Db,
        keys: Keys,
        auth: VerifierConfig,
        access_ttl: Duration,
        refresh_ttl: Duration,
        outbox: Outbox,
    ) -> Self {
        Self {
            db,
            keys,
            auth,
            access_ttl,
            refresh_ttl,
            outbox,
        }
    }

    /// Registers a customer.
    ///
    /// # Errors
    /// [`AccountError::Invalid`] naming every bad field, [`AccountError::EmailTaken`].
    pub async fn register(&self, email: &str, password: &str, name: &str) -> Result<User, AccountError> {
        let email = Email::parse(email);
        let password = Password::parse(password, email.as_ref().ok().map(Email::as_str));
        let name = DisplayName::parse(name);
        let (email, password, name) = match (email, password, name) {
            (Ok(e), Ok(p), Ok(n)) => (e, p, n),
            (e, p, n) => {
                let mut invalid = Vec::new();
                if let Err(m) = e {
                    invalid.push(("email", m));
                }
                if let Err(m) = p {
                    invalid.push(("password", m));
                }
                if let Err(m) = n {
                    invalid.push(("name", m));
                }
                return Err(AccountError::Invalid(invalid));
            }
        };
        let password_hash = credentials::hash(password.expose().to_owned()).await?;
        self.create_user(&email, &name, &password_hash, &[Role::Customer])
            .await
    }

    pub(crate) async fn create_user(
        &self,
        email: &Email,
        name: &DisplayName,
        password_hash: &str,
        roles: &[Role],
    ) -> Result<User, AccountError> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.db.begin().await?;
        let new = store::NewUser {
            id: &id,
            email,
            name,
            password_hash,
            created_at: now_millis(),
        };
        match store::insert_user(&mut tx, &new, roles).await {
            Err(e) if e.is_conflict() => return Err(AccountError::EmailTaken),
            other => other?,
        }
        // The event commits with the account, or neither does.
        let event = UserRegistered {
            user_id: id.clone(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
        };
        let context = Context {
            correlation_id: CorrelationId::current().map(|c| c.to_string()),
            ..Context::default()
        };
        let mut envelope = Envelope::new(crate::NAME, &id, &event, &context)
            .map_err(|e| StorageError::Config(e.to_string()))?;
        outbox::append(&mut tx, &mut envelope).await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(User {
            id,
            email: email.clone(),
            name: name.clone(),
            roles: roles.to_vec(),
        })
    }

    /// The OAuth password grant.
    ///
    /// # Errors
    /// [`AccountError::InvalidGrant`] for unknown users and wrong passwords alike.
    pub async fn password_grant(&self, username: &str, password: &str) -> Result<TokenPair, AccountError> {
        const REFUSED: &str = "the email or password is wrong";
        let found = match Email::parse(username) {
            Ok(email) => store::find_credentials(self.db.pool(), &email).await?,
            Err(_) => None,
        };
        let (user_id, stored) = match found {
            Some(c) => (Some(c.user_id), Some(c.password_hash)),
            None => (None, None),
        };
        if !credentials::verify(password.to_owned(), stored).await? {
            return Err(AccountError::InvalidGrant(REFUSED));
        }
        let user_id = user_id.ok_or(AccountError::InvalidGrant(REFUSED))?;
        let family = uuid::Uuid::now_v7().to_string();
        let mut tx = self.db.begin().await?;
        let pair = self.issue(&mut tx, &user_id, &family).await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// The OAuth refresh-token grant, with rotation and reuse detection.
    ///
    /// # Errors
    /// [`AccountError::InvalidGrant`] for unknown, expired, used or revoked tokens.
    pub async fn refresh_grant(&self, refresh_token: &str) -> Result<TokenPair, AccountError> {
        let hash = hash_refresh(refresh_token);
        let now = now_millis();
        let mut tx = self.db.begin().await?;
        let Some(record) = store::find_refresh(&mut tx, &hash).await? else {
            return Err(AccountError::InvalidGrant("the refresh token is not valid"));
        };
        if record.revoked_at.is_some() {
            return Err(AccountError::InvalidGrant("the refresh token has been revoked"));
        }
        if record.used_at.is_some() || !store::mark_used(&mut tx, &hash, now).await? {
            let revoked = store::revoke_family(&mut tx, &record.family_id, now).await?;
            // The revocation must stick although the request fails.
            tx.commit().await?;
            tracing::warn!(user_id = %record.user_id, revoked, "refresh token reuse: family revoked");
            return Err(AccountError::InvalidGrant("the refresh token was already used"));
        }
        if record.expires_at <= now {
            return Err(AccountError::InvalidGrant("the refresh token has expired"));
        }
        let pair = self.issue(&mut tx, &record.user_id, &record.family_id).await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Revokes the refresh token's family (RFC 7009): the token and every token rotated from
    /// the same sign-in stop working. An unknown token is not an error; there is nothing to do.
    ///
    /// # Errors
    /// The database failed.
    pub async fn revoke(&self, refresh_token: &str) -> Result<(), AccountError> {
        let hash = hash_refresh(refresh_token);
        let mut tx = self.db.begin().await?;
        if let Some(record) = store::find_refresh(&mut tx, &hash).await? {
            store::revoke_family(&mut tx, &record.family_id, now_millis()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn issue(
        &self,
        tx: &mut mercato_storage::Tx,
        user_id: &str,
        family: &str,
    ) -> Result<TokenPair, AccountError> {
        let roles = store::user_roles(&mut **tx, user_id).await?;
        let now_ms = now_millis();
        let now = u64::try_from(now_ms / 1000).unwrap_or(0);
        let claims = Claims {
            iss: self.auth.issuer.clone(),
            aud: self.auth.audience.clone(),
            sub: user_id.to_owned(),
            exp: now + self.access_ttl.as_secs(),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::now_v7().to_string(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        };
        let access_token = mercato_security::sign(&claims, &self.keys.active())?;
        let refresh_token = new_refresh_token();
        let expires = now_ms.saturating_add(millis(self.refresh_ttl));
        store::insert_refresh(
            tx,
            &hash_refresh(&refresh_token),
            family,
            user_id,
            now_ms,
            expires,
        )
        .await?;
        Ok(TokenPair {
            access_token,
            expires_in: self.access_ttl.as_secs(),
            refresh_token,
        })
    }

    /// # Errors
    /// [`AccountError::UnknownUser`] when the id names no user.
    pub async fn user(&self, user_id: &str) -> Result<User, AccountError> {
        store::find_user(self.db.pool(), user_id)
            .await?
            .ok_or(AccountError::UnknownUser)
    }

    /// The user registered with `email` (for an admin's lookup).
    ///
    /// # Errors
    /// [`AccountError::UnknownUser`] when no user has that e-mail (or it is no e-mail at all).
    pub async fn user_by_email(&self, email: &str) -> Result<User, AccountError> {
        let email = Email::parse(email).map_err(|_| AccountError::UnknownUser)?;
        let id = store::find_user_id(self.db.pool(), &email)
            .await?
            .ok_or(AccountError::UnknownUser)?;
        self.user(&id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_long_random_and_hash_stably() {
        let a = new_refresh_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_refresh_token());
        assert_eq!(hash_refresh(&a), hash_refresh(&a));
        assert_eq!(hash_refresh(&a).len(), 64);
    }
}
