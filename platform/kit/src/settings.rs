//! The settings every service has, as one type each service's config embeds.

use std::net::SocketAddr;

use mercato_messaging::{InboxConfig, RelayConfig};
use mercato_runtime::HttpConfig;
#[doc(hidden)]
pub use mercato_runtime::settings::{InvalidSetting, Validate, section};
use mercato_runtime::tls::TlsConfig;
use mercato_security::{ServiceTokensConfig, VerifierConfig};
use mercato_storage::DatabaseConfig;

/// Where a service listens, its server, database, token checks, relay, inbox and TLS.
///
/// The binary fills these from the top-level sections (`[http]`, `[database]`, `[auth]`,
/// `[relay]`, `[inbox]`, `[service_tokens]`, `[tls]`), so a refusal names the key as the user writes it.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub listen: SocketAddr,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: VerifierConfig,
    /// Where identity publishes its signing keys (identity itself verifies with its own).
    pub jwks_url: String,
    pub relay: RelayConfig,
    pub inbox: InboxConfig,
    /// Service tokens: required by internal routes and sent by clients when enabled.
    pub service_tokens: ServiceTokensConfig,
    /// Identity's token endpoint, where clients fetch service tokens.
    pub token_url: String,
    /// Mutual TLS with the other services: served, and presented on every call.
    pub tls: TlsConfig,
}

impl Validate for ServiceSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        section("http", &self.http)?;
        section("database", &self.database)?;
        section("auth", &self.auth)?;
        section("relay", &self.relay)?;
        section("service_tokens", &self.service_tokens)?;
        section("inbox", &self.inbox)?;
        section("tls", &self.tls)
    }
}

/// Declares a service's `Config`: [`ServiceSettings`] as `service`, then the service's own
/// fields. A field written `field: Type => "key"` is a settings type checked under `key`, so a
/// refusal names `key.what`; `check = path` adds the service's rules across fields, run last.
/// The service's `Config` is then checked in the same order everywhere: the shared settings
/// first, its own sections next.
///
/// ```ignore
/// mercato_kit::service_config! {
///     /// Everything inventory needs to start.
///     pub struct Config {
///         pub inventory: InventoryConfig => "inventory",
///     }
/// }
/// ```
#[macro_export]
macro_rules! service_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty $(=> $key:literal)?,)*
        }
        $(check = $check:path;)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pub service: $crate::ServiceSettings,
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $crate::settings::Validate for $name {
            fn validate(&self) -> Result<(), $crate::settings::InvalidSetting> {
                $crate::settings::section("", &self.service)?;
                $($($crate::settings::section($key, &self.$field)?;)?)*
                $($check(self)?;)?
                Ok(())
            }
        }
    };
}
