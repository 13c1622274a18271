//! Matching a request path to a route.

use std::sync::Arc;
use std::time::Duration;

use crate::StartError;
use crate::config::{DEFAULT_CLASS, RouteAuth, RouteConfig};

/// A route ready for matching.
#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: Arc<str>,
    pub upstream: Arc<str>,
    pub auth: RouteAuth,
    /// The caller needs one of these (empty: none).
    pub roles: Arc<[Arc<str>]>,
    /// The rate-limit class.
    pub class: Arc<str>,
    /// The route's own upstream timeout, overriding the gateway's.
    pub timeout: Option<Duration>,
}

/// Routes sorted longest prefix first, so the most specific rule wins.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// # Errors
    /// A route names an upstream that is not configured.
    pub fn new(configs: &[RouteConfig], upstream_exists: impl Fn(&str) -> bool) -> Result<Self, StartError> {
        let mut routes = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            if !upstream_exists(&c.upstream) {
                return Err(StartError::Config {
                    key: format!("gateway.routes[{i}].upstream"),
                    message: format!("no upstream named {:?} is configured", c.upstream),
                });
            }
            let prefix = c.prefix.trim_end_matches('/');
            routes.push(Route {
                prefix: if prefix.is_empty() {
                    "/".into()
                } else {
                    prefix.into()
                },
                upstream: c.upstream.as_str().into(),
                auth: c.auth,
                roles: c.roles.iter().map(|r| Arc::from(r.as_str())).collect(),
                class: c.rate_class.as_deref().unwrap_or(DEFAULT_CLASS).into(),
                timeout: c.timeout_ms.map(Duration::from_millis),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self { routes })
    }

    /// The route for `path`: a prefix matches itself and whole segments below it, so
    /// `/api/identity` matches `/api/identity/me` but not `/api/identityx`.
    #[must_use]
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            let p = r.prefix.as_ref();
            p == "/" || path == p || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let configs = vec![
            RouteConfig::new("/api/identity", "identity", RouteAuth::Required),
            RouteConfig::new("/api/identity/token", "identity", RouteAuth::Public),
        ];
        RouteTable::new(&configs, |name| name == "identity").unwrap()
    }

    #[test]
    fn the_longest_prefix_wins() {
        let t = table();
        assert_eq!(t.find("/api/identity/token").unwrap().auth, RouteAuth::Public);
        assert_eq!(t.find("/api/identity/me").unwrap().auth, RouteAuth::Required);
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let t = table();
        assert!(t.find("/api/identityx").is_none());
        assert_eq!(t.find("/api/identity/tokenx").unwrap().auth, RouteAuth::Required);
        assert!(t.find("/api").is_none());
    }

    #[test]
    fn an_unknown_upstream_is_a_config_error_naming_the_key() {
        let configs = vec![RouteConfig::new("/x", "nope", RouteAuth::Public)];
        let err = RouteTable::new(&configs, |_| false).unwrap_err();
        assert!(err.to_string().contains("gateway.routes[0].upstream"));
    }
}
