//! Routes (path prefix → upstream) and the role rules scoped by path pattern and method.

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
