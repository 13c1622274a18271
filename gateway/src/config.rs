//! The gateway's settings (`[gateway]`).
//!
//! Access rules come in two places. A route may list `roles` (the caller needs any one of them),
//! and `[[gateway.rules]]` add method- and path-scoped requirements on top: a rule's `prefix` is
//! matched segment by segment against the (percent-decoded) path, `*` matching any one segment,
//! and the rule covers the paths at or below it; `methods` (empty: every method) narrows it.
//! Every route and rule that matches a request must be satisfied, so rules only ever add
//! requirements. Rate limits are per route class (`[gateway.rate_limit.classes.NAME]`); a route
//! names its class in `rate_class`, `default` when it names none.

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
        self.rate_limit.invalid_setting()
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
    fn a_zero_rate_is_refused_by_key() {
        let mut config = GatewayConfig::default();
        config.rate_limit.classes.get_mut("auth").unwrap().rate_per_second = 0;
        assert_eq!(
            config.invalid_setting().unwrap().0,
            "rate_limit.classes.auth.rate_per_second"
        );
    }
}
