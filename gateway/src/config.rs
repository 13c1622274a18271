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
use std::time::Duration;

use mercato_resilience::{Backoff, BulkheadConfig, CircuitBreakerConfig, ConfigError, RetryConfig};

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

/// `[gateway.circuit_breaker]`: the settings of every upstream's breaker (see
/// [`mercato_resilience::circuit_breaker`]). Upstream `5xx` answers, connection errors and
/// timeouts are failures; `4xx` answers are not. Rates are whole percentages (as resilience4j
/// writes them), so that the configuration stays comparable; the defaults are the library's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerSettings {
    /// Failed calls, in percent of the window, at which the breaker opens (1–100).
    pub failure_rate_threshold_percent: u8,
    /// Slow calls, in percent of the window, at which the breaker opens (1–100).
    pub slow_call_rate_threshold_percent: u8,
    /// A call whose answer takes at least this long is slow.
    pub slow_call_duration_threshold_ms: u64,
    /// How many of the latest outcomes the closed breaker judges.
    pub sliding_window_size: usize,
    /// No verdict before this many outcomes are in the window.
    pub minimum_number_of_calls: usize,
    /// How long an open breaker refuses calls before it lets probes through.
    pub wait_duration_ms: u64,
    pub permitted_calls_in_half_open: usize,
    /// Limit on each half-open probe; a probe that exceeds it is a failure.
    pub probe_timeout_ms: u64,
}

impl Default for CircuitBreakerSettings {
    fn default() -> Self {
        let lib = CircuitBreakerConfig::default();
        Self {
            failure_rate_threshold_percent: percent(lib.failure_rate_threshold),
            slow_call_rate_threshold_percent: percent(lib.slow_call_rate_threshold),
            // A checkout legitimately takes seconds under load; only calls near the upstream
            // timeout count as slow at the edge, or a busy service would be cut off.
            slow_call_duration_threshold_ms: 10_000,
            sliding_window_size: lib.sliding_window_size,
            minimum_number_of_calls: lib.minimum_number_of_calls,
            wait_duration_ms: millis(lib.wait_duration_in_open),
            permitted_calls_in_half_open: lib.permitted_calls_in_half_open,
            probe_timeout_ms: 10_000,
        }
    }
}

impl CircuitBreakerSettings {
    /// The library's configuration.
    #[must_use]
    pub fn to_config(&self) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_rate_threshold: f64::from(self.failure_rate_threshold_percent) / 100.0,
            slow_call_rate_threshold: f64::from(self.slow_call_rate_threshold_percent) / 100.0,
            slow_call_duration_threshold: Duration::from_millis(self.slow_call_duration_threshold_ms),
            sliding_window_size: self.sliding_window_size,
            minimum_number_of_calls: self.minimum_number_of_calls,
            wait_duration_in_open: Duration::from_millis(self.wait_duration_ms),
            permitted_calls_in_half_open: self.permitted_calls_in_half_open,
            probe_timeout: Duration::from_millis(self.probe_timeout_ms),
        }
    }

    fn invalid_setting(&self) -> Option<(String, String)> {
        let key = |k: &str| format!("circuit_breaker.{k}");
        if self.wait_duration_ms == 0 {
            return Some((key("wait_duration_ms"), "must be greater than 0".into()));
        }
        let renamed = |lib: &str| {
            match lib {
                "failure_rate_threshold" => "failure_rate_threshold_percent",
                "slow_call_rate_threshold" => "slow_call_rate_threshold_percent",
                "probe_timeout" => "probe_timeout_ms",
                other => other,
            }
            .to_owned()
        };
        let reason = |e: ConfigError| match e.key {
            "failure_rate_threshold" | "slow_call_rate_threshold" => "must be between 1 and 100".to_owned(),
            _ => e.reason.to_owned(),
        };
        self.to_config()
            .validate()
            .err()
            .map(|e| (key(&renamed(e.key)), reason(e)))
    }
}

/// `[gateway.retry]`: retries of idempotent requests without a body (GET, HEAD, OPTIONS, or any
/// request with an `Idempotency-Key`) after a connection error or a `502`/`503`/`504` answer,
/// with full-jitter exponential backoff, under a retry budget shared by all upstreams (see
/// [`mercato_resilience::retry`]). The budget defaults are the library's (Linkerd's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Longest wait before the first retry; it doubles for each further one, up to the cap.
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Retries allowed on top of traffic, in percent of requests (20: one retry per five).
    pub budget_percent: u16,
    /// Retries allowed per second regardless of traffic.
    pub budget_min_per_sec: u32,
    /// How long a request counts towards the budget (1–60 s).
    pub budget_window_secs: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        let lib = RetryConfig::default();
        Self {
            max_attempts: 2,
            backoff_base_ms: millis(lib.backoff.base),
            backoff_cap_ms: millis(lib.backoff.cap),
            budget_percent: u16::from(percent(f64::from(lib.budget_ratio))),
            budget_min_per_sec: lib.budget_min_per_sec,
            budget_window_secs: lib.budget_window.as_secs(),
        }
    }
}

impl RetrySettings {
    /// The library's configuration.
    #[must_use]
    pub fn to_config(&self) -> RetryConfig {
        RetryConfig {
            max_attempts: self.max_attempts,
            backoff: Backoff {
                base: Duration::from_millis(self.backoff_base_ms),
                cap: Duration::from_millis(self.backoff_cap_ms),
            },
            budget_ratio: f32::from(self.budget_percent) / 100.0,
            budget_min_per_sec: self.budget_min_per_sec,
            budget_window: Duration::from_secs(self.budget_window_secs),
        }
    }

    fn invalid_setting(&self) -> Option<(String, String)> {
        let renamed = |lib: &'static str| match lib {
            "backoff.cap" => "backoff_cap_ms",
            "budget_ratio" => "budget_percent",
            "budget_window" => "budget_window_secs",
            other => other,
        };
        self.to_config()
            .validate()
            .err()
            .map(|e| (format!("retry.{}", renamed(e.key)), e.reason.to_owned()))
    }
}

/// `[gateway.bulkhead]`: a concurrency limit per upstream, so that one slow service cannot hold
/// every connection and task of the gateway. A request that finds it full waits up to
/// `max_wait_ms` in a queue of `max_queued`, then gets `503`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkheadSettings {
    pub max_concurrent: usize,
    pub max_queued: usize,
    pub max_wait_ms: u64,
}

impl Default for BulkheadSettings {
    fn default() -> Self {
        Self {
            max_concurrent: 512,
            max_queued: 512,
            max_wait_ms: 200,
        }
    }
}

impl BulkheadSettings {
    #[must_use]
    pub fn to_config(&self) -> BulkheadConfig {
        BulkheadConfig {
            max_concurrent: self.max_concurrent,
            max_queued: self.max_queued,
            max_wait: Duration::from_millis(self.max_wait_ms),
        }
    }
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

/// A rate (0.0–1.0) as a whole percentage; the library's default rates are whole percentages.
fn percent(rate: f64) -> u8 {
    // Clamped to 0–100 first, so the conversion cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let p = (rate.clamp(0.0, 1.0) * 100.0).round() as u8;
    p
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    pub circuit_breaker: CircuitBreakerSettings,
    pub retry: RetrySettings,
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
            circuit_breaker: CircuitBreakerSettings::default(),
            retry: RetrySettings::default(),
            bulkhead: BulkheadSettings::default(),
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
        if self.bulkhead.max_concurrent == 0 {
            return Some(("bulkhead.max_concurrent".into(), "must be at least 1".into()));
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
        self.health_check
            .invalid_setting()
            .or_else(|| self.circuit_breaker.invalid_setting())
            .or_else(|| self.retry.invalid_setting())
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
    fn resilience_defaults_are_the_librarys_but_two_attempts_and_a_lenient_slow_call() {
        let config = GatewayConfig::default();
        let breaker = config.circuit_breaker.to_config();
        let lib = CircuitBreakerConfig::default();
        assert!((breaker.failure_rate_threshold - lib.failure_rate_threshold).abs() < 1e-9);
        assert!((breaker.slow_call_rate_threshold - lib.slow_call_rate_threshold).abs() < 1e-9);
        assert_eq!(breaker.wait_duration_in_open, lib.wait_duration_in_open);
        assert_eq!(breaker.sliding_window_size, lib.sliding_window_size);
        assert_eq!(breaker.minimum_number_of_calls, lib.minimum_number_of_calls);
        assert_eq!(breaker.slow_call_duration_threshold, Duration::from_secs(10));
        assert_eq!(breaker.probe_timeout, Duration::from_secs(10));
        let retry = config.retry.to_config();
        let lib = RetryConfig::default();
        assert_eq!(retry.max_attempts, 2);
        assert_eq!(retry.backoff, lib.backoff);
        assert!((retry.budget_ratio - lib.budget_ratio).abs() < 1e-6);
        assert_eq!(retry.budget_min_per_sec, lib.budget_min_per_sec);
        assert_eq!(retry.budget_window, lib.budget_window);
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
    fn resilience_sections_deserialize_with_defaults_for_missing_keys() {
        let config: GatewayConfig = serde_json::from_value(serde_json::json!({
            "circuit_breaker": { "wait_duration_ms": 250 },
            "retry": { "max_attempts": 3 },
            "routes": [{ "prefix": "/x", "upstream": "x", "auth": "public", "timeout_ms": 500 }],
        }))
        .unwrap();
        assert_eq!(config.circuit_breaker.wait_duration_ms, 250);
        assert_eq!(
            config.circuit_breaker.sliding_window_size,
            CircuitBreakerSettings::default().sliding_window_size
        );
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.retry.budget_percent, 20);
        assert_eq!(config.routes[0].timeout_ms, Some(500));
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
