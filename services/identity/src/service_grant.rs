//! The `client_credentials` grant: tokens for services calling each other.
//!
//! A service authenticates with an assertion signed by its own key (`private_key_jwt`, RFC 7523)
//! or with its client secret (`client_secret_post`); identity reads the service's public key or
//! secret from `[service_tokens] keys_dir` at each request, so a key replaced on disk counts at
//! once. It asks for one callee (`audience`, or `resource` per RFC 8707), which
//! `[service_tokens] calls` must allow. The token is short-lived, names the service as `sub` and
//! the callee as `aud`, and has a type of its own (`svc+jwt`).
//!
//! An assertion is accepted once: its `jti` is remembered until it expires. The memory is this
//! process's; with several identity replicas an assertion could be replayed once per replica
//! within its minute, which still yields only tokens for the very service that signed it.

use std::path::PathBuf;

use mercato_security::service_token::{
    ASSERTION_TYPE, AssertionChecker, AssertionError, KnownClient, ServiceTokensConfig, assertion_subject,
    is_service_name, known_client, secrets_match,
};
use mercato_security::{Claims, KeyError, TokenError, VerifierConfig};

use crate::keys::Keys;

/// What a `client_credentials` request carries.
#[derive(Debug, Default)]
pub struct ClientCredentials<'a> {
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
    pub assertion_type: Option<&'a str>,
    pub assertion: Option<&'a str>,
    pub audience: Option<&'a str>,
}

/// Why no service token was issued, as the OAuth 2 error it is.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// A parameter is missing or malformed (`invalid_request`).
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// The client could not be authenticated (`invalid_client`, 401).
    #[error("{0}")]
    InvalidClient(String),
    /// The client is known but may not call anyone (`unauthorized_client`).
    #[error("this client may not use the client_credentials grant")]
    UnauthorizedClient,
    /// The client may not call the audience it asked for (`invalid_target`, RFC 8707).
    #[error("this client may not call {0}")]
    InvalidTarget(String),
    #[error("the client's key or secret cannot be read: {0}")]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// A service token and its lifetime in seconds.
#[derive(Debug, Clone)]
pub struct ServiceToken {
    pub access_token: String,
    pub expires_in: u64,
}

/// Issues service tokens.
#[derive(Debug)]
pub struct ServiceGrant {
    config: ServiceTokensConfig,
    issuer: String,
    keys: Keys,
    assertions: AssertionChecker,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ServiceGrant {
    #[must_use]
    pub fn new(config: ServiceTokensConfig, auth: &VerifierConfig, keys: Keys) -> Self {
        Self {
            assertions: AssertionChecker::new(&auth.issuer, auth.leeway_secs),
            issuer: auth.issuer.clone(),
            config,
            keys,
        }
    }

    /// Authenticates the client, checks the audience, and signs its token.
    ///
    /// # Errors
    /// See [`GrantError`].
    pub async fn grant(&self, request: &ClientCredentials<'_>) -> Result<ServiceToken, GrantError> {
        let audience = request
            .audience
            .filter(|a| !a.is_empty())
            .ok_or(GrantError::InvalidRequest(
                "the audience (or resource) parameter is required",
            ))?;
        let client = self.authenticate(request).await?;
        if self.config.calls.get(&client).is_none_or(Vec::is_empty) {
            return Err(GrantError::UnauthorizedClient);
        }
        if !self.config.may_call(&client, audience) {
            return Err(GrantError::InvalidTarget(audience.to_owned()));
        }
        let now = now();
        let ttl = self.config.ttl_secs;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            sub: client,
            exp: now + ttl,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::now_v7().to_string(),
            roles: Vec::new(),
        };
        Ok(ServiceToken {
            access_token: mercato_security::sign_service(&claims, &self.keys.active())?,
            expires_in: ttl,
        })
    }

    /// The client's name, once its assertion or secret checked out.
    async fn authenticate(&self, request: &ClientCredentials<'_>) -> Result<String, GrantError> {
        let unknown = || GrantError::InvalidClient("unknown client".to_owned());
        match (request.assertion, request.client_secret) {
            (Some(assertion), None) => {
                if request.assertion_type != Some(ASSERTION_TYPE) {
                    return Err(GrantError::InvalidRequest(
                        "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ));
                }
                let client = assertion_subject(assertion).map_err(refused)?;
                if request.client_id.is_some_and(|id| id != client) {
                    return Err(refused(AssertionError::NotTheClient));
                }
                let known = self.known(&client).await?.ok_or_else(unknown)?;
                let key = known.public_key.ok_or_else(unknown)?;
                self.assertions
                    .check(assertion, &client, &key, now())
                    .map_err(refused)?;
                Ok(client)
            }
            (None, Some(secret)) => {
                let client = request
                    .client_id
                    .ok_or(GrantError::InvalidRequest("client_secret needs client_id"))?;
                let known = self.known(client).await?.ok_or_else(unknown)?;
                let matches = known.secret.is_some_and(|s| secrets_match(secret, &s));
                if !matches {
                    return Err(GrantError::InvalidClient("the client secret is wrong".to_owned()));
                }
                Ok(client.to_owned())
            }
            (None, None) => Err(GrantError::InvalidClient(
                "authenticate with client_assertion or client_secret".to_owned(),
            )),
            (Some(_), Some(_)) => Err(GrantError::InvalidRequest("use one client authentication method")),
        }
    }

    /// What identity holds for `client`, read on the blocking pool; `None` for a name that
    /// cannot be a service.
    async fn known(&self, client: &str) -> Result<Option<KnownClient>, GrantError> {
        if !is_service_name(client) {
            return Ok(None);
        }
        let dir: PathBuf = self.config.keys_dir.clone();
        let client = client.to_owned();
        let known = tokio::task::spawn_blocking(move || known_client(&dir, &client))
            .await
            .unwrap_or_else(|_| Ok(KnownClient::default()))?;
        Ok(Some(known))
    }
}

fn refused(error: AssertionError) -> GrantError {
    GrantError::InvalidClient(error.to_string())
}
