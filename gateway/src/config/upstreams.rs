//! How upstream calls are guarded and spread: breakers, retries, bulkheads, load balancing,
//! health checks, and each upstream's blue and green instance groups.

use mercato_runtime::settings::{InvalidSetting, Validate};
use serde::{Deserialize, Serialize};

/// `[gateway.circuit_breaker]`: every instance's breaker, `[gateway.retry]`: retries of
/// idempotent requests without a body (GET, HEAD, OPTIONS, or any request with an
/// `Idempotency-Key`) under one budget shared by all upstreams, and `[gateway.bulkhead]`: a
/// concurrency limit per upstream, so that one slow service cannot hold every connection and task
/// of the gateway. The settings are the same as the services' clients' (`[client]`, see
/// [`mercato_runtime::config`]); the gateway's defaults differ where the edge differs:
///
/// - a call is slow only near 10 s, since a checkout legitimately takes seconds under load and a
///   busy service must not be cut off;
/// - two attempts in all: a client at the edge can retry itself, and each retry here is one more
///   request on a service that is already failing;
/// - a bulkhead of 512 per upstream, as the gateway carries every client's traffic.
///
/// A table that sets some keys keeps the gateway's defaults for the others.
pub use mercato_runtime::config::{
    BreakerSettings as CircuitBreakerSettings, BulkheadSettings, RetrySettings,
};

pub(super) fn default_breaker() -> CircuitBreakerSettings {
    CircuitBreakerSettings {
        slow_call_duration_threshold_ms: 10_000,
        probe_timeout_ms: 10_000,
        ..CircuitBreakerSettings::default()
    }
}

pub(super) fn default_retry() -> RetrySettings {
    RetrySettings {
        max_attempts: 2,
        ..RetrySettings::default()
    }
}

pub(super) fn default_bulkhead() -> BulkheadSettings {
    BulkheadSettings {
        max_concurrent: 512,
        max_queued: 512,
        max_wait_ms: 200,
    }
}

/// Deserializes a table over `base`: the keys it sets replace `base`'s, the others stay, and an
/// unknown key is still refused.
fn over<'de, D, T>(deserializer: D, base: T) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Serialize + serde::de::DeserializeOwned,
{
    use serde::de::Error as _;
    let given = serde_json::Value::deserialize(deserializer)?;
    let serde_json::Value::Object(given) = given else {
        return Err(D::Error::custom("expected a table"));
    };
    let mut merged = serde_json::to_value(base).map_err(D::Error::custom)?;
    if let Some(fields) = merged.as_object_mut() {
        fields.extend(given);
    }
    serde_json::from_value(merged).map_err(D::Error::custom)
}

pub(super) fn breaker_over_defaults<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<CircuitBreakerSettings, D::Error> {
    over(d, default_breaker())
}

pub(super) fn retry_over_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RetrySettings, D::Error> {
    over(d, default_retry())
}

pub(super) fn bulkhead_over_defaults<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BulkheadSettings, D::Error> {
    over(d, default_bulkhead())
}

/// How an upstream's instance is chosen for each attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancingPolicy {
    /// In turn.
    RoundRobin,
    /// Power of two choices: of two instances drawn at random, the one with the lower
    /// latency estimate times requests in flight.
    #[default]
    P2c,
}

/// `[gateway.load_balancing]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadBalancingConfig {
    pub policy: BalancingPolicy,
    /// How fast the latency estimate forgets: a sample this old weighs 1/e of a fresh one.
    pub latency_decay_ms: u64,
}

impl Default for LoadBalancingConfig {
    fn default() -> Self {
        Self {
            policy: BalancingPolicy::P2c,
            latency_decay_ms: 10_000,
        }
    }
}

/// `[gateway.health_check]`: every instance's `path` is fetched every `interval_ms`; an instance
/// failing `unhealthy_threshold` checks in a row gets no traffic until it passes
/// `healthy_threshold` in a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    pub enabled: bool,
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/ready".into(),
            interval_ms: 2_000,
            timeout_ms: 1_000,
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        }
    }
}

impl Validate for HealthCheckConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        let key = |k: &str| format!("health_check.{k}");
        if !self.path.starts_with('/') {
            return Err(InvalidSetting::new(key("path"), "must start with /"));
        }
        if self.interval_ms == 0 || self.timeout_ms == 0 {
            let k = if self.interval_ms == 0 {
                "interval_ms"
            } else {
                "timeout_ms"
            };
            return Err(InvalidSetting::new(key(k), "must be greater than 0"));
        }
        if self.unhealthy_threshold == 0 || self.healthy_threshold == 0 {
            let k = if self.unhealthy_threshold == 0 {
                "unhealthy_threshold"
            } else {
                "healthy_threshold"
            };
            return Err(InvalidSetting::new(key(k), "must be at least 1"));
        }
        Ok(())
    }
}

/// `[gateway.upstreams.NAME]`: an upstream's two instance groups for blue/green deployments.
/// `blue`, when set, replaces the instances the gateway was started with; `green_percent` of
/// requests go to `green` (0: all blue, 100: all green). The admin API changes both at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    pub blue: Vec<String>,
    pub green: Vec<String>,
    pub green_percent: u8,
    /// What a deployment fetches from each instance of the target group before it switches.
    pub smoke_path: String,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            blue: Vec::new(),
            green: Vec::new(),
            green_percent: 0,
            smoke_path: "/health".into(),
        }
    }
}

/// Where the admin API's changes (instances, splits) are kept and shared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminStateBackend {
    /// In this process only: a restart goes back to the configuration.
    #[default]
    Memory,
    /// A JSON file (`path`): survives restarts; gateways on one machine share it.
    File,
    /// A Redis hash (`redis_url`, `key_prefix`): every gateway shares it.
    Redis,
}

/// `[gateway.admin_state]`: see [`crate::upstream::shared`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminStateConfig {
    pub backend: AdminStateBackend,
    pub path: String,
    pub redis_url: String,
    pub key_prefix: String,
    pub redis_timeout_ms: u64,
    /// How often every gateway reads the store for changes made elsewhere.
    pub sync_interval_ms: u64,
}

impl Default for AdminStateConfig {
    fn default() -> Self {
        Self {
            backend: AdminStateBackend::Memory,
            path: ".mercato/gateway-admin.json".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "mercato:gateway:".into(),
            redis_timeout_ms: 500,
            sync_interval_ms: 1_000,
        }
    }
}

impl Validate for AdminStateConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        let key = |k: &str| format!("admin_state.{k}");
        match self.backend {
            AdminStateBackend::Memory => return Ok(()),
            AdminStateBackend::File if self.path.is_empty() => {
                return Err(InvalidSetting::new(key("path"), "must name a file"));
            }
            AdminStateBackend::Redis if !self.redis_url.starts_with("redis://") => {
                return Err(InvalidSetting::new(key("redis_url"), "must be a redis:// URL"));
            }
            AdminStateBackend::Redis if self.redis_timeout_ms == 0 => {
                return Err(InvalidSetting::new(
                    key("redis_timeout_ms"),
                    "must be greater than 0",
                ));
            }
            _ => {}
        }
        mercato_runtime::settings::positive(self.sync_interval_ms, &key("sync_interval_ms"))
    }
}

/// `[gateway.adaptive_concurrency]`: see [`crate::adaptive`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConcurrencyConfig {
    pub enabled: bool,
    pub initial_limit: u32,
    pub min_limit: u32,
    pub max_limit: u32,
    /// How much slower than usual a sample may be before the limit shrinks, in percent (150: 1.5×).
    pub tolerance_percent: u32,
    /// How far the limit may grow per sample while latency holds.
    pub queue_size: u32,
    /// The share of each step the limit takes, in percent.
    pub smoothing_percent: u32,
}

impl Default for AdaptiveConcurrencyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            initial_limit: 32,
            min_limit: 4,
            max_limit: 512,
            tolerance_percent: 150,
            queue_size: 4,
            smoothing_percent: 20,
        }
    }
}

impl AdaptiveConcurrencyConfig {
    #[must_use]
    pub fn tolerance(&self) -> f64 {
        f64::from(self.tolerance_percent) / 100.0
    }

    #[must_use]
    pub fn smoothing(&self) -> f64 {
        f64::from(self.smoothing_percent) / 100.0
    }

    pub(super) fn validate(&self) -> Result<(), InvalidSetting> {
        let key = |k: &str| format!("adaptive_concurrency.{k}");
        if !self.enabled {
            return Ok(());
        }
        if self.min_limit == 0 {
            return Err(InvalidSetting::new(key("min_limit"), "must be at least 1"));
        }
        if self.max_limit < self.min_limit {
            return Err(InvalidSetting::new(
                key("max_limit"),
                "must be at least min_limit",
            ));
        }
        if !(self.min_limit..=self.max_limit).contains(&self.initial_limit) {
            return Err(InvalidSetting::new(
                key("initial_limit"),
                "must be between min_limit and max_limit",
            ));
        }
        if self.tolerance_percent < 100 {
            return Err(InvalidSetting::new(
                key("tolerance_percent"),
                "must be at least 100",
            ));
        }
        if self.smoothing_percent == 0 || self.smoothing_percent > 100 {
            return Err(InvalidSetting::new(
                key("smoothing_percent"),
                "must be between 1 and 100",
            ));
        }
        Ok(())
    }
}
