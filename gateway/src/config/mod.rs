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
//!
//! Layout: `edge` (limits on client connections), `auth` (the memory of verified tokens),
//! `routes` (routes and role rules), `rate_limit` (rate classes and their backend), `upstreams`
//! (the guards of upstream calls, balancing, health checks, instance groups).

mod auth;
mod console;
mod edge;
mod rate_limit;
mod routes;
mod upstreams;

use std::collections::BTreeMap;

use mercato_runtime::settings::{InvalidSetting, Validate};
use serde::{Deserialize, Serialize};

pub use auth::AuthConfig;
pub use console::ConsoleConfig;
pub use edge::{EdgeConfig, PreauthConfig, PublicTls};
pub use rate_limit::{DEFAULT_CLASS, RateClassConfig, RateLimitBackend, RateLimitConfig};
pub use routes::{RouteAuth, RouteConfig, RuleConfig};
pub use upstreams::{
    AdaptiveConcurrencyConfig, AdminStateBackend, AdminStateConfig, BalancingPolicy, BulkheadSettings,
    CircuitBreakerSettings, HealthCheckConfig, LoadBalancingConfig, RetrySettings, UpstreamSettings,
};
use upstreams::{
    breaker_over_defaults, bulkhead_over_defaults, default_breaker, default_bulkhead, default_retry,
    retry_over_defaults,
};

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
    /// Networks (`10.0.0.0/8`, or one address) whose `Forwarded` and `X-Forwarded-For` are
    /// believed; from any other peer the peer's address is the client's.
    pub trusted_proxies: Vec<String>,
    pub edge: EdgeConfig,
    pub preauth: PreauthConfig,
    /// The memory of verified tokens.
    pub auth: AuthConfig,
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
    pub adaptive_concurrency: AdaptiveConcurrencyConfig,
    pub health_check: HealthCheckConfig,
    /// Per-upstream instance groups, overriding the instances the gateway is started with.
    pub upstreams: BTreeMap<String, UpstreamSettings>,
    /// Where admin changes to the upstreams are kept and shared between gateways.
    pub admin_state: AdminStateConfig,
    /// The operations console at `/console`.
    pub console: ConsoleConfig,
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
            trusted_proxies: Vec::new(),
            edge: EdgeConfig::default(),
            preauth: PreauthConfig::default(),
            auth: AuthConfig::default(),
            routes: vec![
                RouteConfig::new("/api/identity/register", "identity", Public).with_rate_class("auth"),
                RouteConfig::new("/api/identity/token", "identity", Public).with_rate_class("auth"),
                // A refresh token is its own credential: revoking it needs no access token.
                RouteConfig::new("/api/identity/revoke", "identity", Public).with_rate_class("auth"),
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
                // Only the methods the routes declare: any other reaches the service, whose
                // answer is 405 with Allow, not a 403 that hides which methods exist.
                RuleConfig::new("/api/products/*/stock", &["PUT"], &["admin"]),
                RuleConfig::new("/api/products/*/price", &["PUT"], &["admin"]),
                RuleConfig::new("/api/orders/*/ship", &["POST"], &["admin"]),
                RuleConfig::new("/api/orders/*/deliver", &["POST"], &["admin"]),
            ],
            rate_limit: RateLimitConfig::default(),
            circuit_breaker: default_breaker(),
            retry: default_retry(),
            bulkhead: default_bulkhead(),
            load_balancing: LoadBalancingConfig::default(),
            adaptive_concurrency: AdaptiveConcurrencyConfig::default(),
            health_check: HealthCheckConfig::default(),
            upstreams: BTreeMap::new(),
            admin_state: AdminStateConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

impl Validate for GatewayConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.connect_timeout_ms == 0 {
            return Err(InvalidSetting::new(
                "connect_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.upstream_timeout_ms == 0 {
            return Err(InvalidSetting::new(
                "upstream_timeout_ms",
                "must be greater than 0",
            ));
        }
        if let Err((i, message)) = crate::forwarded::TrustedProxies::parse(&self.trusted_proxies) {
            return Err(InvalidSetting::new(format!("trusted_proxies[{i}]"), message));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !route.prefix.starts_with('/') {
                return Err(InvalidSetting::new(
                    format!("routes[{i}].prefix"),
                    "must start with /",
                ));
            }
            if route.roles.iter().any(String::is_empty) {
                return Err(InvalidSetting::new(
                    format!("routes[{i}].roles"),
                    "a role must not be empty",
                ));
            }
            if route.timeout_ms == Some(0) {
                return Err(InvalidSetting::new(
                    format!("routes[{i}].timeout_ms"),
                    "must be greater than 0",
                ));
            }
            let class = route.rate_class.as_deref().unwrap_or(DEFAULT_CLASS);
            if self.rate_limit.enabled && !self.rate_limit.classes.contains_key(class) {
                return Err(InvalidSetting::new(
                    format!("routes[{i}].rate_class"),
                    format!("no class {class:?} in rate_limit.classes"),
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.prefix.starts_with('/') {
                return Err(InvalidSetting::new(
                    format!("rules[{i}].prefix"),
                    "must start with /",
                ));
            }
            if rule.roles.is_empty() || rule.roles.iter().any(String::is_empty) {
                return Err(InvalidSetting::new(
                    format!("rules[{i}].roles"),
                    "must name at least one role",
                ));
            }
            if let Some(m) = rule
                .methods
                .iter()
                .find(|m| http::Method::from_bytes(m.as_bytes()).is_err())
            {
                return Err(InvalidSetting::new(
                    format!("rules[{i}].methods"),
                    format!("{m:?} is not a method"),
                ));
            }
        }
        if self.load_balancing.latency_decay_ms == 0 {
            return Err(InvalidSetting::new(
                "load_balancing.latency_decay_ms",
                "must be greater than 0",
            ));
        }
        for (name, upstream) in &self.upstreams {
            if upstream.green_percent > 100 {
                return Err(InvalidSetting::new(
                    format!("upstreams.{name}.green_percent"),
                    "must be between 0 and 100",
                ));
            }
            if upstream.green_percent > 0 && upstream.green.is_empty() {
                return Err(InvalidSetting::new(
                    format!("upstreams.{name}.green"),
                    "green_percent sends traffic to green, which has no instances",
                ));
            }
            if !upstream.smoke_path.starts_with('/') {
                return Err(InvalidSetting::new(
                    format!("upstreams.{name}.smoke_path"),
                    "must start with /",
                ));
            }
        }
        // The services' client settings, validated the same way and named by the same keys.
        let guards = mercato_runtime::ClientConfig {
            circuit_breaker: self.circuit_breaker.clone(),
            retry: self.retry.clone(),
            bulkhead: self.bulkhead.clone(),
            ..mercato_runtime::ClientConfig::default()
        };
        guards.validate()?;
        self.health_check.validate()?;
        self.edge.validate()?;
        self.preauth.validate()?;
        self.auth.validate()?;
        self.admin_state.validate()?;
        self.adaptive_concurrency.validate()?;
        self.console.validate().map_err(|e| e.within("console"))?;
        self.rate_limit.validate()
    }
}

#[cfg(test)]
mod tests;
