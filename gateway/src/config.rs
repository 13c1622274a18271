//! The gateway's settings (`[gateway]`).

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
}

impl RouteConfig {
    fn new(prefix: &str, upstream: &str, auth: RouteAuth) -> Self {
        Self {
            prefix: prefix.into(),
            upstream: upstream.into(),
            auth,
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
                RouteConfig::new("/api/identity/register", "identity", Public),
                RouteConfig::new("/api/identity/token", "identity", Public),
                RouteConfig::new("/api/identity", "identity", Required),
                RouteConfig::new("/.well-known/jwks.json", "identity", Public),
                RouteConfig::new("/api/customers", "customers", Required),
                // Browsing is public; inventory itself refuses stock and price changes to
                // anyone but an admin.
                RouteConfig::new("/api/products", "inventory", Public),
                RouteConfig::new("/api/orders", "orders", Required),
                RouteConfig::new("/api/payments", "payments", Required),
                RouteConfig::new("/api/notifications", "notifications", Required),
            ],
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
        }
        None
    }
}
