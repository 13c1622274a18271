//! The effective configuration: built-in defaults, then `mercato.toml` (or `--config`), then
//! `MERCATO_*` environment variables (`__` separates sections: `MERCATO_HTTP__BODY_LIMIT_BYTES`).
//! Placeholders `{data_dir}` and `{service}` in paths and database URLs are filled in here, and
//! every setting is validated before anything starts, with a message that names its key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format as _, Serialized, Toml};
use figment::value::{Dict, Value};
use mercato_gateway::GatewayConfig;
use mercato_identity::IdentityConfig;
use mercato_messaging::{BusConfig, InboxConfig, RelayConfig};
use mercato_runtime::settings::{InvalidSetting, positive, section};
use mercato_runtime::telemetry::LogFormat;
use mercato_runtime::tls::TlsConfig;
use mercato_runtime::trace::TraceSettings;
use mercato_runtime::{ClientConfig, HttpConfig};
use mercato_security::{ServiceTokensConfig, VerifierConfig};
use mercato_storage::{Backend, DatabaseConfig};
use serde::{Deserialize, Serialize};

use crate::names::ServiceName;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// `[log]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// Where one service listens and how others reach it (`[services.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub listen: SocketAddr,
    /// The base URL other processes use; defaults to `http://<listen>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Overrides `[database] url` for this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

impl Endpoint {
    fn at(listen: &str) -> Self {
        Self {
            listen: listen.parse().expect("default addresses parse"),
            url: None,
            database_url: None,
        }
    }

    #[must_use]
    pub fn base_url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where embedded mode keeps its databases and keys.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    /// Traces: recorded, kept, exported (`[telemetry]`, and the standard `OTEL_*` variables).
    pub telemetry: TraceSettings,
    pub http: HttpConfig,
    pub client: ClientConfig,
    pub database: DatabaseConfig,
    pub auth: VerifierConfig,
    /// Service tokens on internal calls (`[service_tokens]`).
    pub service_tokens: ServiceTokensConfig,
    pub identity: IdentityConfig,
    pub gateway: GatewayConfig,
    pub bus: BusConfig,
    pub relay: RelayConfig,
    pub inbox: InboxConfig,
    /// Mutual TLS between services (`[tls]`): this process's certificate, key and CA.
    pub tls: TlsConfig,
    pub projections: ProjectionsConfig,
    pub inventory: mercato_inventory::InventoryConfig,
    pub orders: mercato_orders::SagaConfig,
    /// Orders' cached lookups of customers and products (`[cache]`).
    pub cache: mercato_orders::CacheConfig,
    pub notifications: mercato_notifications::NotificationsConfig,
    pub payments: mercato_payments::PaymentsConfig,
    pub sandbox: SandboxConfig,
    pub services: BTreeMap<String, Endpoint>,
}

/// `[sandbox]`: the built-in payment provider's test behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// How long `tok_late` takes: longer than `orders.payment_timeout_ms`.
    pub late_delay_ms: u64,
    /// Attempts per key that `tok_flaky` fails.
    pub flaky_failures: u32,
    pub capacity: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let d = mercato_payments::sandbox::SandboxConfig::default();
        Self {
            // Late for the saga's default payment deadline, as the card is meant to be.
            late_delay_ms: mercato_orders::SagaConfig::default().payment_timeout_ms + 5_000,
            flaky_failures: d.flaky_failures,
            capacity: d.capacity,
        }
    }
}

/// `[projections]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionsConfig {
    /// How often a projection looks for new events when nothing woke it.
    pub poll_ms: u64,
}

impl Default for ProjectionsConfig {
    fn default() -> Self {
        Self { poll_ms: 250 }
    }
}

impl Default for Config {
    fn default() -> Self {
        let services = BTreeMap::from([
            ("gateway".to_owned(), Endpoint::at("127.0.0.1:8080")),
            ("identity".to_owned(), Endpoint::at("127.0.0.1:8101")),
            ("customers".to_owned(), Endpoint::at("127.0.0.1:8102")),
            ("inventory".to_owned(), Endpoint::at("127.0.0.1:8103")),
            ("orders".to_owned(), Endpoint::at("127.0.0.1:8104")),
            ("payments".to_owned(), Endpoint::at("127.0.0.1:8105")),
            ("notifications".to_owned(), Endpoint::at("127.0.0.1:8106")),
            ("payment-sandbox".to_owned(), Endpoint::at("127.0.0.1:8190")),
        ]);
        Self {
            data_dir: PathBuf::from(".mercato"),
            log: LogConfig::default(),
            telemetry: TraceSettings::default(),
            http: HttpConfig::default(),
            client: ClientConfig::default(),
            database: DatabaseConfig::default(),
            auth: VerifierConfig::default(),
            service_tokens: ServiceTokensConfig::default(),
            identity: IdentityConfig::default(),
            gateway: GatewayConfig {
                // Embedded, admin changes (instances, blue/green splits) outlive a restart in a
                // file beside the databases; distributed settings point this at Redis.
                admin_state: mercato_gateway::AdminStateConfig {
                    backend: mercato_gateway::AdminStateBackend::File,
                    path: "{data_dir}/gateway-admin.json".into(),
                    ..mercato_gateway::AdminStateConfig::default()
                },
                ..GatewayConfig::default()
            },
            bus: BusConfig::default(),
            relay: RelayConfig::default(),
            inbox: InboxConfig::default(),
            tls: TlsConfig::default(),
            projections: ProjectionsConfig::default(),
            inventory: mercato_inventory::InventoryConfig::default(),
            orders: mercato_orders::SagaConfig::default(),
            cache: mercato_orders::CacheConfig::default(),
            notifications: mercato_notifications::NotificationsConfig::default(),
            payments: mercato_payments::PaymentsConfig::default(),
            sandbox: SandboxConfig::default(),
            services,
        }
    }
}

/// Where configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A TOML file; `None` reads `mercato.toml` when it exists.
    pub file: Option<PathBuf>,
    /// The environment, as `(name, value)` pairs (tests pass their own; the binary passes
    /// `std::env::vars()`).
    pub env: Vec<(String, String)>,
    /// `--data-dir`, which beats the file and the environment.
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads, resolves and validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        match &sources.file {
            Some(path) => {
                if !path.exists() {
                    return Err(invalid("--config", format!("{} does not exist", path.display())));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new("mercato.toml").exists() => {
                figment = figment.merge(Toml::file_exact("mercato.toml"));
            }
            None => {}
        }
        figment = figment.merge(Serialized::defaults(env_settings(&sources.env)));
        let mut config: Self = figment.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        let env: std::collections::HashMap<String, String> = sources.env.iter().cloned().collect();
        config.telemetry = config
            .telemetry
            .with_env(&env)
            .map_err(|e| ConfigError::Invalid {
                key: e.key,
                message: e.reason,
            })?;
        if let Some(dir) = &sources.data_dir {
            config.data_dir.clone_from(dir);
        }
        config.prepared()
    }

    /// Fills in placeholders and validates: what [`Config::load`] does after reading sources, for
    /// callers (tests) that build a configuration in code.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the offending key.
    pub fn prepared(mut self) -> Result<Self, ConfigError> {
        self.resolve()?;
        self.validate()?;
        Ok(self)
    }

    fn resolve(&mut self) -> Result<(), ConfigError> {
        if self.data_dir.is_relative() {
            let cwd = std::env::current_dir().map_err(|e| invalid("data_dir", e.to_string()))?;
            self.data_dir = cwd.join(&self.data_dir);
        }
        let data_dir = self.data_dir.display().to_string();
        let keys = self
            .identity
            .keys_dir
            .display()
            .to_string()
            .replace("{data_dir}", &data_dir);
        self.identity.keys_dir = PathBuf::from(keys);
        let service_keys = self.service_tokens.keys_dir.display().to_string();
        self.service_tokens.keys_dir = PathBuf::from(service_keys.replace("{data_dir}", &data_dir));
        self.database.url = self.database.url.replace("{data_dir}", &data_dir);
        self.bus.url = self.bus.url.replace("{data_dir}", &data_dir);
        self.gateway.admin_state.path = self.gateway.admin_state.path.replace("{data_dir}", &data_dir);
        for endpoint in self.services.values_mut() {
            if let Some(url) = &mut endpoint.database_url {
                *url = url.replace("{data_dir}", &data_dir);
            }
        }
        Ok(())
    }

    /// The one place a whole configuration is checked: every section by its own
    /// [`Validate`], with the key named as it is written in `mercato.toml`.
    fn validate(&self) -> Result<(), ConfigError> {
        let refused = |e: InvalidSetting| ConfigError::Invalid {
            key: e.key,
            message: e.reason,
        };
        self.validate_sections().map_err(refused)?;
        for service in ServiceName::ALL {
            let key = format!("services.{}", service.as_str());
            let endpoint = self
                .services
                .get(service.as_str())
                .ok_or_else(|| invalid(&key, "is missing"))?;
            let url = endpoint.base_url();
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(invalid(
                    format!("{key}.url"),
                    "must start with http:// or https://",
                ));
            }
            if service.is_domain_service() {
                let db = self.database_for(*service);
                Backend::of_url(&db.url)
                    .map_err(|e| invalid(format!("{key}.database_url"), e.to_string()))?;
            }
        }
        Ok(())
    }

    fn validate_sections(&self) -> Result<(), InvalidSetting> {
        section("telemetry", &self.telemetry)?;
        section("http", &self.http)?;
        section("client", &self.client)?;
        section("auth", &self.auth)?;
        section("identity", &self.identity)?;
        section("service_tokens", &self.service_tokens)?;
        section("bus", &self.bus)?;
        section("relay", &self.relay)?;
        section("inbox", &self.inbox)?;
        section("tls", &self.tls)?;
        positive(self.projections.poll_ms, "projections.poll_ms")?;
        section("inventory", &self.inventory)?;
        section("orders", &self.orders)?;
        self.steps_outlast_redelivery()?;
        section("cache", &self.cache)?;
        section("notifications", &self.notifications)?;
        section("payments", &self.payments)?;
        // The database of each service is checked below, with its own URL filled in.
        positive(
            u64::from(self.database.max_connections),
            "database.max_connections",
        )?;
        positive(self.database.acquire_timeout_ms, "database.acquire_timeout_ms")?;
        section("gateway", &self.gateway)
    }

    /// The saga's step deadlines against the bus's ack wait and the inbox's first retry, and
    /// the inbox's dedup window against every redelivery: the checks that need several sections.
    fn steps_outlast_redelivery(&self) -> Result<(), InvalidSetting> {
        let first_backoff = self.inbox.backoff_ms.first().copied().unwrap_or_default();
        self.orders
            .outlasts_redelivery(self.bus.ack_wait_ms, first_backoff)
            .map_err(|e| e.within("orders"))?;
        self.inbox
            .retention_outlasts_redelivery(self.bus.ack_wait_ms)
            .map_err(|e| e.within("inbox"))
    }

    /// The base URL other processes use for `service`: its `url`, else `http://<listen>`, or
    /// `https://<listen>` for a service served over mutual TLS when `[tls]` is on.
    #[must_use]
    pub fn base_url(&self, service: ServiceName) -> String {
        let endpoint = self.endpoint(service);
        match &endpoint.url {
            Some(url) => url.clone(),
            None => self.url_of(service, endpoint.listen),
        }
    }

    /// `service`'s URL at `addr`: `https://` when it is served over TLS (a domain service over
    /// mutual TLS, the gateway with `[gateway.edge.tls]`), else `http://`.
    #[must_use]
    pub fn url_of(&self, service: ServiceName, addr: SocketAddr) -> String {
        let tls = match service {
            ServiceName::Gateway => self.gateway.edge.tls.is_some(),
            _ => self.tls.enabled && service.is_domain_service(),
        };
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// The endpoint of `service` (validated to exist).
    #[must_use]
    pub fn endpoint(&self, service: ServiceName) -> &Endpoint {
        &self.services[service.as_str()]
    }

    /// The database settings of `service`, with `{service}` filled in.
    #[must_use]
    pub fn database_for(&self, service: ServiceName) -> DatabaseConfig {
        let endpoint = self.services.get(service.as_str());
        let url = endpoint
            .and_then(|e| e.database_url.clone())
            .unwrap_or_else(|| self.database.url.clone())
            .replace(
                "{service}",
                &format!("{}{}", self.database_prefix(), service.as_str()),
            );
        DatabaseConfig {
            url,
            ..self.database.clone()
        }
    }

    /// PostgreSQL databases are named `mercato_<service>`; SQLite files just `<service>.db`.
    fn database_prefix(&self) -> &'static str {
        if self.database.url.starts_with("postgres") {
            "mercato_"
        } else {
            ""
        }
    }

    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// Variables with the prefix that are not settings.
const IGNORED_ENV: &[&str] = &[
    "MERCATO_ADMIN_PASSWORD",
    "MERCATO_CONFIG",
    "MERCATO_TEST_POSTGRES_URL",
    "MERCATO_REQUIRE_BACKENDS",
];

/// The `MERCATO_*` variables as nested settings: `MERCATO_HTTP__BODY_LIMIT_BYTES=10` becomes
/// `http.body_limit_bytes = 10`. Taking the pairs as an argument keeps tests off the process
/// environment.
fn env_settings(env: &[(String, String)]) -> Dict {
    let mut dict = Dict::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("MERCATO_") else {
            continue;
        };
        if rest.is_empty() || IGNORED_ENV.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
        insert_path(&mut dict, &path, value);
    }
    dict
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert_path(inner, rest, value);
    }
}

/// The configuration as TOML with its secrets replaced by `***` (`mercato config`): the password
/// of any URL, and any value whose key names a secret. Secrets themselves belong in files
/// (`[service_tokens] keys_dir`, signing keys) or the environment; this keeps one pasted into
/// the configuration out of what is printed.
#[must_use]
pub fn render_toml(config: &Config) -> String {
    let value = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
    let mut out = String::new();
    render_table(&mut out, "", &value);
    out
}

fn render_scalar(value: &serde_json::Value, key: &str) -> String {
    use serde_json::Value as J;
    match value {
        J::String(s) => {
            let s = if names_a_secret(key) && !s.is_empty() {
                "***".to_owned()
            } else {
                mercato_storage::db::redact_url(s)
            };
            serde_json::to_string(&s).unwrap_or_default()
        }
        J::Array(items) => {
            let inner: Vec<String> = items.iter().map(|v| render_scalar(v, key)).collect();
            format!("[{}]", inner.join(", "))
        }
        J::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k} = {}", render_scalar(v, k)))
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
        J::Null => "\"\"".into(),
        other => other.to_string(),
    }
}

/// Keys whose value is a secret whatever its form.
fn names_a_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "passphrase", "api_key", "private_key"]
        .iter()
        .any(|word| key.contains(word))
        || key == "token"
        || key.ends_with("_token")
}

fn render_table(out: &mut String, prefix: &str, value: &serde_json::Value) {
    use std::fmt::Write as _;
    let serde_json::Value::Object(map) = value else {
        return;
    };
    for (k, v) in map.iter().filter(|(_, v)| !v.is_object()) {
        let _ = writeln!(out, "{k} = {}", render_scalar(v, k));
    }
    for (k, v) in map.iter().filter(|(_, v)| v.is_object()) {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let _ = writeln!(out, "\n[{name}]");
        render_table(out, &name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        Config::load(&Sources {
            file: Some(write_empty(dir.path())),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            data_dir: Some(dir.path().to_owned()),
        })
    }

    fn write_empty(dir: &Path) -> PathBuf {
        let path = dir.join("mercato.toml");
        std::fs::write(&path, "").unwrap();
        path
    }

    #[test]
    fn printed_configuration_hides_every_secret() {
        let config = load(&[
            ("MERCATO_DATABASE__URL", "postgres://app:pg-pass@db/{service}"),
            ("MERCATO_BUS__URL", "nats://svc:nats-pass@nats:4222"),
            (
                "MERCATO_GATEWAY__RATE_LIMIT__REDIS_URL",
                "redis://:redis-pass@cache:6379",
            ),
            ("MERCATO_CACHE__REDIS_URL", "redis://orders:cache-pass@cache:6379"),
        ])
        .unwrap();
        let out = render_toml(&config);
        for secret in ["pg-pass", "nats-pass", "redis-pass", "cache-pass"] {
            assert!(!out.contains(secret), "{secret} printed:\n{out}");
        }
        assert!(out.contains("redis://:***@cache:6379"), "{out}");
        assert!(out.contains("[service_tokens]"), "{out}");
        // Whatever section a secret-named key is in, and whatever its form.
        let value = serde_json::json!({"smtp": {"password": "p1", "host": "h"}, "client_secret": "p2",
            "access_token": "p3", "max_token_bytes": 4096, "list": ["http://u:p4@h/"]});
        let mut out = String::new();
        render_table(&mut out, "", &value);
        for secret in ["p1", "p2", "p3", "p4"] {
            assert!(!out.contains(secret), "{secret} printed:\n{out}");
        }
        assert!(
            out.contains("max_token_bytes = 4096") && out.contains("host = \"h\""),
            "{out}"
        );
    }

    #[test]
    fn defaults_are_embedded_sqlite_with_the_gateway_on_8080() {
        let config = load(&[]).unwrap();
        assert_eq!(config.endpoint(ServiceName::Gateway).listen.port(), 8080);
        let db = config.database_for(ServiceName::Identity);
        assert!(db.url.starts_with("sqlite://"), "{}", db.url);
        assert!(db.url.ends_with("/identity.db?mode=rwc"), "{}", db.url);
        assert!(config.identity.keys_dir.starts_with(&config.data_dir));
    }

    #[test]
    fn environment_overrides_nested_settings() {
        let config = load(&[
            ("MERCATO_HTTP__BODY_LIMIT_BYTES", "2048"),
            ("MERCATO_SERVICES__IDENTITY__LISTEN", "127.0.0.1:0"),
            ("MERCATO_ADMIN_PASSWORD", "not a setting"),
        ])
        .unwrap();
        assert_eq!(config.http.body_limit_bytes, 2048);
        assert_eq!(config.endpoint(ServiceName::Identity).listen.port(), 0);
    }

    #[test]
    fn postgres_databases_are_named_per_service() {
        let config = load(&[("MERCATO_DATABASE__URL", "postgres://u:pw@h:5432/{service}")]).unwrap();
        assert_eq!(
            config.database_for(ServiceName::Identity).url,
            "postgres://u:pw@h:5432/mercato_identity"
        );
        assert!(render_toml(&config).contains("postgres://u:***@h:5432/{service}"));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = load(&[("MERCATO_HTTP__BODY_LIMIT_BYTES", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("body_limit_bytes"), "{err}");
        let err = load(&[("MERCATO_HTTP__BODY_LIMIT_BYTES", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.body_limit_bytes"), "{err}");
        let err = load(&[("MERCATO_DATABASE__URL", "mysql://x/y")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("services.identity.database_url"), "{err}");
    }

    #[test]
    fn a_dedup_window_a_redelivery_could_outlast_is_refused_by_its_key() {
        // With the defaults a message can come again for 91.2 s: five attempts of the 5 s ack
        // wait, the backoffs (36.2 s) and the reorder waits (30 s).
        match load(&[("MERCATO_INBOX__RETENTION_SECS", "90")]) {
            Err(ConfigError::Invalid { key, message }) => {
                assert_eq!(key, "inbox.retention_secs");
                assert!(message.contains("91200 ms"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        load(&[("MERCATO_INBOX__RETENTION_SECS", "92")]).unwrap();
    }

    #[test]
    fn a_step_deadline_a_redelivery_could_outlast_is_refused_by_its_key() {
        let invalid = |env: &[(&str, &str)]| match load(env) {
            Err(ConfigError::Invalid { key, message }) => (key, message),
            other => panic!("expected a refusal, got {other:?}"),
        };
        let (key, message) = invalid(&[
            ("MERCATO_BUS__ACK_WAIT_MS", "5000"),
            ("MERCATO_INBOX__BACKOFF_MS", "[200, 1000]"),
            ("MERCATO_ORDERS__PAYMENT_TIMEOUT_MS", "15199"),
        ]);
        assert_eq!(key, "orders.payment_timeout_ms");
        assert!(message.contains("15200 ms"), "{message}");
        let (key, _) = invalid(&[
            ("MERCATO_BUS__ACK_WAIT_MS", "10000"),
            ("MERCATO_ORDERS__RESERVE_TIMEOUT_MS", "30000"),
        ]);
        assert_eq!(key, "orders.reserve_timeout_ms");
        // The same deadlines pass with a shorter ack wait.
        load(&[
            ("MERCATO_BUS__ACK_WAIT_MS", "1000"),
            ("MERCATO_INBOX__BACKOFF_MS", "[200, 1000]"),
            ("MERCATO_ORDERS__PAYMENT_TIMEOUT_MS", "15199"),
        ])
        .unwrap();
    }

    #[test]
    fn an_unknown_key_in_a_section_is_refused() {
        let err = load(&[("MERCATO_HTTP__BODY_LIMT", "1")]).unwrap_err().to_string();
        assert!(err.contains("body_limt"), "{err}");
    }

    #[test]
    fn a_config_file_is_read_and_the_environment_beats_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "[http]\nbody_limit_bytes = 100\nrequest_timeout_ms = 5\n").unwrap();
        let config = Config::load(&Sources {
            file: Some(path),
            env: vec![("MERCATO_HTTP__BODY_LIMIT_BYTES".into(), "200".into())],
            data_dir: None,
        })
        .unwrap();
        assert_eq!(config.http.body_limit_bytes, 200);
        assert_eq!(config.http.request_timeout_ms, 5);
    }
}
