//! The gateway's settings (`[gateway]`).
//!
//! Access rules come in two places. A route may list `roles` (the caller needs any one of them),
//! and `[[gateway.rules]]` add method- and path-scoped requirements on top: a rule's `prefix` is
//! matched segment by segment against the (percent-decoded) path, `*` matching any one segment,
//! and the rule covers the paths at or below it; `methods` (empty: every method) narrows it.
//! Every route and rule that matches a request must be satisfied, so rules only ever add
//! requirements. Rate limits are per route class (`[gateway.rate_limit.classes.NAME]`); a route
//! names its class in `rate_class`, `default` when it names none.
//!
//! Each upstream has instances in a blue and a green group (`[gateway.upstreams.NAME]`, blue
//! defaulting to the service's own address). Attempts are spread over the instances by
//! `[gateway.load_balancing]`; instances failing `[gateway.health_check]` get no traffic; each
//! instance has a circuit breaker (`[gateway.circuit_breaker]`) that ejects it while it keeps
//! failing; each upstream has a bulkhead (`[gateway.bulkhead]`); idempotent requests without a
//! body are retried under a budget (`[gateway.retry]`). A
//! route's `timeout_ms` overrides `upstream_timeout_ms`; either bounds the whole upstream
//! exchange, retries included, and reaches the upstream as `x-request-deadline-ms`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Whether a route needs a verified bearer token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    Public,
    #[default]
    Required,
}

/// One routing rule: requests whose path is `prefix` or lies below it go to `upstream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub auth: RouteAuth,
    /// The caller needs any one of these roles (empty: no role is needed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The rate-limit class of the route; [`DEFAULT_CLASS`] when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_class: Option<String>,
    /// Longest wait for the upstream's response head on this route, retries included;
    /// `upstream_timeout_ms` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl RouteConfig {
    /// A route with no role and the default rate class.
    #[must_use]
    pub fn new(prefix: &str, upstream: &str, auth: RouteAuth) -> Self {
        Self {
            prefix: prefix.into(),
            upstream: upstream.into(),
            auth,
            roles: Vec::new(),
            rate_class: None,
            timeout_ms: None,
        }
    }

    #[must_use]
    pub fn with_roles(mut self, roles: &[&str]) -> Self {
        self.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        self
    }

    #[must_use]
    pub fn with_rate_class(mut self, class: &str) -> Self {
        self.rate_class = Some(class.to_owned());
        self
    }

    #[must_use]
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }
}

/// A role requirement on requests matching `prefix` (with `*` segments) and `methods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub prefix: String,
    /// Upper-case method names; empty means every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The caller needs any one of these.
    pub roles: Vec<String>,
}

impl RuleConfig {
    #[must_use]
    pub fn new(prefix: &str, methods: &[&str], roles: &[&str]) -> Self {
        Self {
            prefix: prefix.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }
}

/// The class a route without `rate_class` belongs to.
pub const DEFAULT_CLASS: &str = "default";

/// Where rate-limit state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitBackend {
    /// In this process: each gateway instance limits on its own.
    #[default]
    Local,
    /// In Redis, so every instance shares one limit; the local limiter stands in while Redis is
    /// unreachable.
    Redis,
}

/// One rate class: a sustained rate and the burst allowed on top of it (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateClassConfig {
    pub rate_per_second: u32,
    pub burst: u32,
}

/// `[gateway.rate_limit]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub backend: RateLimitBackend,
    pub redis_url: String,
    /// Prefix of every Redis key, so environments (and tests) sharing a server stay apart.
    pub key_prefix: String,
    /// Longest wait for Redis before a request is limited locally instead.
    pub redis_timeout_ms: u64,
    /// After a Redis failure, how long the gateway limits locally before it tries Redis again.
    pub redis_retry_interval_ms: u64,
    /// Most keys the local limiter holds; idle keys are evicted first.
    pub local_max_keys: usize,
    pub classes: BTreeMap<String, RateClassConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: RateLimitBackend::Local,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "mercato:ratelimit".into(),
            redis_timeout_ms: 100,
            redis_retry_interval_ms: 1_000,
            local_max_keys: 100_000,
            classes: BTreeMap::from([
                (
                    DEFAULT_CLASS.to_owned(),
                    RateClassConfig {
                        rate_per_second: 50,
                        burst: 100,
                    },
                ),
                // Password guessing and sign-up floods: a tenth of the sustained rate, keyed by
                // client IP. The burst leaves room for `mercato loadgen`'s setup (two calls per
                // customer, 20 customers by default, from one address).
                (
                    "auth".to_owned(),
                    RateClassConfig {
                        rate_per_second: 5,
                        burst: 50,
                    },
                ),
            ]),
        }
    }
}

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

fn default_breaker() -> CircuitBreakerSettings {
    CircuitBreakerSettings {
        slow_call_duration_threshold_ms: 10_000,
        probe_timeout_ms: 10_000,
        ..CircuitBreakerSettings::default()
    }
}

fn default_retry() -> RetrySettings {
    RetrySettings {
        max_attempts: 2,
        ..RetrySettings::default()
    }
}

fn default_bulkhead() -> BulkheadSettings {
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

fn breaker_over_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CircuitBreakerSettings, D::Error> {
    over(d, default_breaker())
}

fn retry_over_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RetrySettings, D::Error> {
    over(d, default_retry())
}

fn bulkhead_over_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BulkheadSettings, D::Error> {
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

impl HealthCheckConfig {
    fn invalid_setting(&self) -> Option<(String, String)> {
        let key = |k: &str| format!("health_check.{k}");
        if !self.path.starts_with('/') {
            return Some((key("path"), "must start with /".into()));
        }
        if self.interval_ms == 0 || self.timeout_ms == 0 {
            let k = if self.interval_ms == 0 {
                "interval_ms"
            } else {
                "timeout_ms"
            };
            return Some((key(k), "must be greater than 0".into()));
        }
        if self.unhealthy_threshold == 0 || self.healthy_threshold == 0 {
            let k = if self.unhealthy_threshold == 0 {
                "unhealthy_threshold"
            } else {
                "healthy_threshold"
            };
            return Some((key(k), "must be at least 1".into()));
        }
        None
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub connect_timeout_ms: u64,
    /// Longest wait for an upstream's response head before answering `504`.
    pub upstream_timeout_ms: u64,
    pub pool_max_idle_per_host: usize,
    /// How long a fetched JWKS is trusted before it is fetched again.
    pub jwks_max_age_secs: u64,
    /// Fetches caused by unknown `kid`s are at most this frequent.
    pub jwks_min_refresh_interval_ms: u64,
    pub routes: Vec<RouteConfig>,
    /// Role requirements scoped by path pattern and method, on top of the routes' own.
    pub rules: Vec<RuleConfig>,
    pub rate_limit: RateLimitConfig,
    #[serde(deserialize_with = "breaker_over_defaults")]
    pub circuit_breaker: CircuitBreakerSettings,
    #[serde(deserialize_with = "retry_over_defaults")]
    pub retry: RetrySettings,
    #[serde(deserialize_with = "bulkhead_over_defaults")]
    pub bulkhead: BulkheadSettings,
    pub load_balancing: LoadBalancingConfig,
    pub health_check: HealthCheckConfig,
    /// Per-upstream instance groups, overriding the instances the gateway is started with.
    pub upstreams: BTreeMap<String, UpstreamSettings>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        use RouteAuth::{Public, Required};
        Self {
            connect_timeout_ms: 1_000,
            upstream_timeout_ms: 15_000,
            pool_max_idle_per_host: 64,
            jwks_max_age_secs: 300,
            jwks_min_refresh_interval_ms: 1_000,
            routes: vec![
                RouteConfig::new("/api/identity/register", "identity", Public).with_rate_class("auth"),
                RouteConfig::new("/api/identity/token", "identity", Public).with_rate_class("auth"),
                RouteConfig::new("/api/identity", "identity", Required),
                RouteConfig::new("/.well-known/jwks.json", "identity", Public),
                RouteConfig::new("/api/customers", "customers", Required),
                // Browsing is public; changes need an admin (a rule below), and inventory checks
                // again itself.
                RouteConfig::new("/api/products", "inventory", Public),
                RouteConfig::new("/api/orders", "orders", Required),
                RouteConfig::new("/api/payments", "payments", Required),
                RouteConfig::new("/api/notifications", "notifications", Required),
            ],
            rules: vec![
                RuleConfig::new("/api/products", &["PUT", "POST", "PATCH", "DELETE"], &["admin"]),
                RuleConfig::new("/api/orders/*/ship", &[], &["admin"]),
                RuleConfig::new("/api/orders/*/deliver", &[], &["admin"]),
            ],
            rate_limit: RateLimitConfig::default(),
            circuit_breaker: default_breaker(),
            retry: default_retry(),
            bulkhead: default_bulkhead(),
            load_balancing: LoadBalancingConfig::default(),
            health_check: HealthCheckConfig::default(),
            upstreams: BTreeMap::new(),
        }
    }
}

impl GatewayConfig {
    /// The first setting that cannot work, with its key.
    #[must_use]
    pub fn invalid_setting(&self) -> Option<(String, String)> {
        if self.connect_timeout_ms == 0 {
            return Some(("connect_timeout_ms".into(), "must be greater than 0".into()));
        }
        if self.upstream_timeout_ms == 0 {
            return Some(("upstream_timeout_ms".into(), "must be greater than 0".into()));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !route.prefix.starts_with('/') {
                return Some((format!("routes[{i}].prefix"), "must start with /".into()));
            }
            if route.roles.iter().any(String::is_empty) {
                return Some((format!("routes[{i}].roles"), "a role must not be empty".into()));
            }
            if route.timeout_ms == Some(0) {
                return Some((format!("routes[{i}].timeout_ms"), "must be greater than 0".into()));
            }
            let class = route.rate_class.as_deref().unwrap_or(DEFAULT_CLASS);
            if self.rate_limit.enabled && !self.rate_limit.classes.contains_key(class) {
                return Some((
                    format!("routes[{i}].rate_class"),
                    format!("no class {class:?} in rate_limit.classes"),
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.prefix.starts_with('/') {
                return Some((format!("rules[{i}].prefix"), "must start with /".into()));
            }
            if rule.roles.is_empty() || rule.roles.iter().any(String::is_empty) {
                return Some((format!("rules[{i}].roles"), "must name at least one role".into()));
            }
            if let Some(m) = rule
                .methods
                .iter()
                .find(|m| http::Method::from_bytes(m.as_bytes()).is_err())
            {
                return Some((format!("rules[{i}].methods"), format!("{m:?} is not a method")));
            }
        }
        if self.load_balancing.latency_decay_ms == 0 {
            return Some((
                "load_balancing.latency_decay_ms".into(),
                "must be greater than 0".into(),
            ));
        }
        for (name, upstream) in &self.upstreams {
            if upstream.green_percent > 100 {
                return Some((
                    format!("upstreams.{name}.green_percent"),
                    "must be between 0 and 100".into(),
                ));
            }
            if upstream.green_percent > 0 && upstream.green.is_empty() {
                return Some((
                    format!("upstreams.{name}.green"),
                    "green_percent sends traffic to green, which has no instances".into(),
                ));
            }
            if !upstream.smoke_path.starts_with('/') {
                return Some((format!("upstreams.{name}.smoke_path"), "must start with /".into()));
            }
        }
        // The services' client settings, validated the same way and named by the same keys.
        let guards = mercato_runtime::ClientConfig {
            circuit_breaker: self.circuit_breaker.clone(),
            retry: self.retry.clone(),
            bulkhead: self.bulkhead.clone(),
            ..mercato_runtime::ClientConfig::default()
        };
        if let Err(refused) = mercato_runtime::Validate::validate(&guards) {
            return Some((refused.key, refused.reason));
        }
        self.health_check
            .invalid_setting()
            .or_else(|| self.rate_limit.invalid_setting())
    }
}

impl RateLimitConfig {
    fn invalid_setting(&self) -> Option<(String, String)> {
        if !self.enabled {
            return None;
        }
        for (name, class) in &self.classes {
            if class.rate_per_second == 0 || class.rate_per_second > 1_000_000 {
                return Some((
                    format!("rate_limit.classes.{name}.rate_per_second"),
                    "must be between 1 and 1000000".into(),
                ));
            }
            if class.burst == 0 {
                return Some((
                    format!("rate_limit.classes.{name}.burst"),
                    "must be greater than 0".into(),
                ));
            }
        }
        if self.local_max_keys == 0 {
            return Some((
                "rate_limit.local_max_keys".into(),
                "must be greater than 0".into(),
            ));
        }
        if self.backend == RateLimitBackend::Redis {
            if !self.redis_url.starts_with("redis://") {
                return Some((
                    "rate_limit.redis_url".into(),
                    "must be a redis:// URL (TLS is not supported)".into(),
                ));
            }
            if self.redis_timeout_ms == 0 {
                return Some((
                    "rate_limit.redis_timeout_ms".into(),
                    "must be greater than 0".into(),
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_valid() {
        assert_eq!(GatewayConfig::default().invalid_setting(), None);
    }

    #[test]
    fn a_route_naming_an_unknown_rate_class_is_refused_by_key() {
        let mut config = GatewayConfig::default();
        config.routes[0].rate_class = Some("nope".into());
        let (key, _) = config.invalid_setting().unwrap();
        assert_eq!(key, "routes[0].rate_class");
    }

    #[test]
    fn a_rule_without_roles_or_with_a_bad_method_is_refused_by_key() {
        let mut config = GatewayConfig::default();
        config.rules.push(RuleConfig::new("/x", &[], &[]));
        assert_eq!(config.invalid_setting().unwrap().0, "rules[3].roles");
        config.rules[3] = RuleConfig::new("/x", &["GE T"], &["admin"]);
        assert_eq!(config.invalid_setting().unwrap().0, "rules[3].methods");
    }

    #[test]
    fn resilience_defaults_are_the_clients_but_two_attempts_a_lenient_slow_call_and_a_wide_bulkhead() {
        use std::time::Duration;

        use mercato_runtime::ClientConfig;

        let config = GatewayConfig::default();
        let breaker = config.circuit_breaker.to_config();
        let client = ClientConfig::default();
        let lib = client.circuit_breaker.to_config();
        assert!((breaker.failure_rate_threshold - lib.failure_rate_threshold).abs() < 1e-9);
        assert!((breaker.slow_call_rate_threshold - lib.slow_call_rate_threshold).abs() < 1e-9);
        assert_eq!(breaker.wait_duration_in_open, lib.wait_duration_in_open);
        assert_eq!(breaker.sliding_window_size, lib.sliding_window_size);
        assert_eq!(breaker.minimum_number_of_calls, lib.minimum_number_of_calls);
        assert_eq!(breaker.slow_call_duration_threshold, Duration::from_secs(10));
        assert_eq!(breaker.probe_timeout, Duration::from_secs(10));
        let retry = config.retry.to_config();
        let lib = client.retry.to_config();
        assert_eq!(retry.max_attempts, 2);
        assert_eq!(retry.backoff, lib.backoff);
        assert!((retry.budget_ratio - lib.budget_ratio).abs() < 1e-6);
        assert_eq!(retry.budget_min_per_sec, lib.budget_min_per_sec);
        assert_eq!(retry.budget_window, lib.budget_window);
        assert_eq!(config.bulkhead.max_concurrent, 512);
    }

    #[test]
    fn resilience_settings_are_refused_by_their_own_key() {
        let mut config = GatewayConfig::default();
        config.circuit_breaker.failure_rate_threshold_percent = 0;
        assert_eq!(
            config.invalid_setting().unwrap().0,
            "circuit_breaker.failure_rate_threshold_percent"
        );
        config.circuit_breaker = CircuitBreakerSettings {
            minimum_number_of_calls: 100,
            ..CircuitBreakerSettings::default()
        };
        assert_eq!(
            config.invalid_setting().unwrap().0,
            "circuit_breaker.minimum_number_of_calls"
        );
        config.circuit_breaker = CircuitBreakerSettings::default();
        config.retry.budget_window_secs = 0;
        assert_eq!(config.invalid_setting().unwrap().0, "retry.budget_window_secs");
        config.retry = RetrySettings::default();
        config.routes[0].timeout_ms = Some(0);
        assert_eq!(config.invalid_setting().unwrap().0, "routes[0].timeout_ms");
    }

    #[test]
    fn a_partial_resilience_table_keeps_the_gateways_defaults_for_the_other_keys() {
        let config: GatewayConfig = serde_json::from_value(serde_json::json!({
            "circuit_breaker": { "wait_duration_ms": 250 },
            "retry": { "budget_percent": 10 },
            "bulkhead": { "max_queued": 0 },
            "routes": [{ "prefix": "/x", "upstream": "x", "auth": "public", "timeout_ms": 500 }],
        }))
        .unwrap();
        let defaults = GatewayConfig::default();
        assert_eq!(config.circuit_breaker.wait_duration_ms, 250);
        assert_eq!(config.circuit_breaker.slow_call_duration_threshold_ms, 10_000);
        assert_eq!(
            config.circuit_breaker.sliding_window_size,
            defaults.circuit_breaker.sliding_window_size
        );
        assert_eq!(config.retry.budget_percent, 10);
        assert_eq!(config.retry.max_attempts, 2);
        assert_eq!(config.bulkhead.max_queued, 0);
        assert_eq!(config.bulkhead.max_concurrent, 512);
        assert_eq!(config.routes[0].timeout_ms, Some(500));
    }

    #[test]
    fn an_unknown_key_in_a_resilience_table_is_refused() {
        let refused = serde_json::from_value::<GatewayConfig>(serde_json::json!({
            "circuit_breaker": { "wait_ms": 250 },
        }));
        assert!(refused.unwrap_err().to_string().contains("wait_ms"));
    }

    #[test]
    fn a_zero_rate_is_refused_by_key() {
        let mut config = GatewayConfig::default();
        config.rate_limit.classes.get_mut("auth").unwrap().rate_per_second = 0;
        assert_eq!(
            config.invalid_setting().unwrap().0,
            "rate_limit.classes.auth.rate_per_second"
        );
    }
}
