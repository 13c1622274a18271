//! The identity service: who people are, and the tokens that prove it.
//!
//! - `domain/`: email, password policy, names, roles (no I/O).
//! - `credentials`: Argon2id hashing on the blocking pool.
//! - `keys`: the ES256 signing keys, reloaded from the key directory after a rotation.
//! - `accounts`: registration and the OAuth password and refresh-token grants.
//! - `service_grant`: the `client_credentials` grant, service tokens for internal calls.
//! - `store/`: identity's SQL and migrations.
//! - `api/`: the HTTP routes and the one mapping from errors to problems.
//! - `admin`: operator tasks for the CLI (the first admin).
#![forbid(unsafe_code)]

pub mod accounts;
pub mod admin;
mod api;

pub use api::openapi;
pub mod credentials;
pub mod domain;
pub mod keys;
pub mod service_grant;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mercato_kit::{ServiceBuilder, StartError};
use mercato_messaging::{Bus, Outbox};
use mercato_runtime::CancellationToken;
use mercato_runtime::settings::{InvalidSetting, Validate, ensure, positive};
use mercato_security::{KeyError, KeyStore, Verifier};
use mercato_storage::Db;
use serde::{Deserialize, Serialize};

pub use accounts::{AccountError, Accounts};

/// The service's name on the wire, in logs and metrics.
pub const NAME: &str = "identity";

/// Identity's own settings (`[identity]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Where the signing keys live: the data directory when embedded, a mounted secret when not.
    pub keys_dir: PathBuf,
    /// Create the first key when the directory has none (off when keys come from a secret).
    pub generate_keys: bool,
    /// How often the key directory is read again to pick up a rotation.
    pub key_reload_interval_secs: u64,
    /// How long a rotated-in key is published before it signs; it must let every identity
    /// replica reload and every gateway refetch. Default: twice the reload interval, plus 1 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_activation_delay_secs: Option<u64>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            keys_dir: PathBuf::from("{data_dir}/keys"),
            generate_keys: true,
            key_reload_interval_secs: 10,
            key_activation_delay_secs: None,
        }
    }
}

impl Validate for IdentityConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        ensure(
            (60..=86_400).contains(&self.access_token_ttl_secs),
            "access_token_ttl_secs",
            "must be between 60 and 86400",
        )?;
        ensure(
            self.refresh_token_ttl_secs >= self.access_token_ttl_secs,
            "refresh_token_ttl_secs",
            "must be at least access_token_ttl_secs",
        )?;
        positive(self.key_reload_interval_secs, "key_reload_interval_secs")?;
        ensure(
            self.key_activation_delay().as_secs() > self.key_reload_interval_secs,
            "key_activation_delay_secs",
            "must be longer than key_reload_interval_secs",
        )
    }
}

impl IdentityConfig {
    #[must_use]
    pub fn key_activation_delay(&self) -> Duration {
        Duration::from_secs(
            self.key_activation_delay_secs
                .unwrap_or(2 * self.key_reload_interval_secs + 1),
        )
    }

    #[must_use]
    pub fn key_store(&self) -> KeyStore {
        KeyStore::new(&self.keys_dir, Duration::from_secs(self.access_token_ttl_secs))
            .with_activation_delay(self.key_activation_delay())
    }
}

mercato_kit::service_config! {
    /// Everything identity needs to start.
    pub struct Config {
        pub identity: IdentityConfig => "identity",
    }
    check = service_tokens_expire_first;
}

/// A signing key stays published for an access token's life after it retires; a service token
/// that outlived that would be refused while still valid.
fn service_tokens_expire_first(config: &Config) -> Result<(), InvalidSetting> {
    ensure(
        config.service.service_tokens.ttl_secs <= config.identity.access_token_ttl_secs,
        "service_tokens.ttl_secs",
        "must not be longer than identity.access_token_ttl_secs",
    )
}

/// The account operations over an open database, for the CLI's admin tasks. Events they cause
/// wait in the outbox until the running service's relay publishes them.
///
/// # Errors
/// The signing keys cannot be loaded.
pub fn accounts(db: Db, config: &Config) -> Result<Accounts, KeyError> {
    let keys = keys::Keys::open(config.identity.key_store(), config.identity.generate_keys)?;
    Ok(accounts_with(db, keys, config, Outbox::new()))
}

fn accounts_with(db: Db, keys: keys::Keys, config: &Config, outbox: Outbox) -> Accounts {
    Accounts::new(
        db,
        keys,
        config.service.auth.clone(),
        Duration::from_secs(config.identity.access_token_ttl_secs),
        Duration::from_secs(config.identity.refresh_token_ttl_secs),
        outbox,
    )
}

pub use mercato_runtime::App;

/// Opens the database and keys and binds the listener; `bus` carries the events identity
/// publishes.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    let mut kit = ServiceBuilder::open(NAME, config, &config.service, store::MIGRATIONS, bus).await?;
    let keys = keys::Keys::open(config.identity.key_store(), config.identity.generate_keys)
        .map_err(|e| StartError::dependency(NAME, "signing keys", e))?;
    credentials::warm_up().await;
    let verifier = Verifier::new(config.service.auth.clone(), keys.local());
    let accounts = Arc::new(accounts_with(
        kit.db().clone(),
        keys.clone(),
        config,
        kit.outbox(),
    ));
    let services = Arc::new(service_grant::ServiceGrant::new(
        config.service.service_tokens.clone(),
        &config.service.auth,
        keys.clone(),
    ));
    kit.relay();
    let reload_every = Duration::from_secs(config.identity.key_reload_interval_secs);
    kit.background("key reload", move |token| reload_keys(keys, reload_every, token));
    kit.serve(api::router(accounts, services, verifier)).await
}

async fn reload_keys(keys: keys::Keys, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => match reload(&keys).await {
                Ok(true) => tracing::info!(kid = %keys.active().kid, "signing key rotated"),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot reload signing keys; keeping the current ones"),
            },
        }
    }
}

/// Reads the key directory on the blocking pool: it is file I/O.
async fn reload(keys: &keys::Keys) -> Result<bool, KeyError> {
    let keys = keys.clone();
    tokio::task::spawn_blocking(move || keys.reload())
        .await
        .unwrap_or(Ok(false))
}
