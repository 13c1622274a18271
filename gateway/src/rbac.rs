//! Role-based access at the gateway: which roles a request needs, and whether a caller has them.
//!
//! A request's requirements are its route's `roles` plus every [`RuleConfig`] that matches its
//! method and path; each requirement is a set of roles of which the caller needs any one. Rule
//! prefixes match whole segments after percent-decoding (so `/api/orders/1/%73hip` is still
//! `ship`), and `*` matches any one segment. Services check roles again themselves.

use std::sync::Arc;

use http::Method;
use mercato_runtime::Problem;

use crate::StartError;
use crate::config::RuleConfig;
use crate::routes::Route;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Any,
    Literal(String),
}

#[derive(Debug, Clone)]
struct Rule {
    segments: Vec<Segment>,
    /// Empty: every method.
    methods: Vec<Method>,
    roles: Arc<[Arc<str>]>,
}

/// The configured rules, ready for matching.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// # Errors
    /// A rule names a method that is not one, or no role.
    pub fn new(configs: &[RuleConfig]) -> Result<Self, StartError> {
        let mut rules = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let methods = c
                .methods
                .iter()
                .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| StartError::Config {
                    key: format!("gateway.rules[{i}].methods"),
                    message: "names something that is not an HTTP method".into(),
                })?;
            if c.roles.is_empty() {
                return Err(StartError::Config {
                    key: format!("gateway.rules[{i}].roles"),
                    message: "must name at least one role".into(),
                });
            }
            let segments = segments(&c.prefix)
                .map(|s| {
                    if s == "*" {
                        Segment::Any
                    } else {
                        Segment::Literal(s)
                    }
                })
                .collect();
            rules.push(Rule {
                segments,
                methods,
                roles: c.roles.iter().map(|r| Arc::from(r.as_str())).collect(),
            });
        }
        Ok(Self { rules })
    }

    /// Every role set a request must satisfy: the route's own, then each matching rule's.
    #[must_use]
    pub fn requirements(&self, route: &Route, method: &Method, path: &str) -> Vec<Arc<[Arc<str>]>> {
        let mut needed = Vec::new();
        if !route.roles.is_empty() {
            needed.push(Arc::clone(&route.roles));
        }
        if self.rules.is_empty() {
            return needed;
        }
        let path: Vec<String> = segments(path).collect();
        for rule in &self.rules {
            let method_matches = rule.methods.is_empty() || rule.methods.contains(method);
            if method_matches && matches(&rule.segments, &path) {
                needed.push(Arc::clone(&rule.roles));
            }
        }
        needed
    }
}

/// `Ok` when `roles` meets every requirement; otherwise the `403` naming the first unmet one.
///
/// # Errors
/// [`Problem::forbidden`].
pub fn authorize(requirements: &[Arc<[Arc<str>]>], roles: &[String]) -> Result<(), Problem> {
    for needed in requirements {
        if !needed.iter().any(|n| roles.iter().any(|r| r == n.as_ref())) {
            let names: Vec<&str> = needed.iter().map(AsRef::as_ref).collect();
            return Err(Problem::forbidden(format!(
                "this action needs one of the roles: {}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// A rule covers the paths whose first segments match it.
fn matches(rule: &[Segment], path: &[String]) -> bool {
    rule.len() <= path.len()
        && rule.iter().zip(path).all(|(r, p)| match r {
            Segment::Any => true,
            Segment::Literal(l) => l == p,
        })
}

/// The percent-decoded segments of a path, without the leading empty one.
fn segments(path: &str) -> impl Iterator<Item = String> + '_ {
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GatewayConfig, RouteAuth};

    fn route(roles: &[&str]) -> Route {
        Route {
            prefix: "/api".into(),
            upstream: "x".into(),
            auth: RouteAuth::Public,
            roles: roles.iter().map(|r| Arc::from(*r)).collect(),
            class: "default".into(),
            timeout: None,
        }
    }

    fn needs(rules: &Rules, method: Method, path: &str) -> Vec<Vec<String>> {
        rules
            .requirements(&route(&[]), &method, path)
            .iter()
            .map(|set| set.iter().map(|r| r.to_string()).collect())
            .collect()
    }

    fn defaults() -> Rules {
        Rules::new(&GatewayConfig::default().rules).unwrap()
    }

    #[test]
    fn the_defaults_keep_browsing_public_and_changes_for_admins() {
        let rules = defaults();
        assert!(needs(&rules, Method::GET, "/api/products").is_empty());
        assert!(needs(&rules, Method::GET, "/api/products/SKU-1").is_empty());
        assert_eq!(
            needs(&rules, Method::PUT, "/api/products/SKU-1/stock"),
            [["admin"]]
        );
        assert_eq!(
            needs(&rules, Method::PUT, "/api/products/SKU-1/price"),
            [["admin"]]
        );
        // Methods no route declares reach inventory, whose answer is 405 with Allow.
        for method in [Method::POST, Method::PATCH, Method::DELETE] {
            assert!(needs(&rules, method, "/api/products/SKU-1/stock").is_empty());
        }
    }

    #[test]
    fn the_defaults_keep_shipping_and_delivery_for_admins() {
        let rules = defaults();
        assert_eq!(needs(&rules, Method::POST, "/api/orders/42/ship"), [["admin"]]);
        assert_eq!(needs(&rules, Method::POST, "/api/orders/42/deliver"), [["admin"]]);
        assert!(needs(&rules, Method::POST, "/api/orders/42/cancel").is_empty());
        assert!(needs(&rules, Method::POST, "/api/orders").is_empty());
        assert!(needs(&rules, Method::GET, "/api/orders/42").is_empty());
        assert!(needs(&rules, Method::POST, "/api/orders/42/shipping").is_empty());
    }

    #[test]
    fn encoded_and_padded_paths_match_like_their_plain_form() {
        let rules = defaults();
        assert_eq!(needs(&rules, Method::POST, "/api/orders/42/%73hip"), [["admin"]]);
        assert_eq!(needs(&rules, Method::POST, "/api/orders/42/ship/"), [["admin"]]);
        assert_eq!(needs(&rules, Method::POST, "//api/orders//42/ship"), [["admin"]]);
        assert_eq!(needs(&rules, Method::PUT, "/api/%70roducts/x/stock"), [["admin"]]);
    }

    #[test]
    fn route_roles_and_rule_roles_must_all_be_met() {
        let rules = Rules::new(&[RuleConfig::new("/api/x", &[], &["admin"])]).unwrap();
        let needed = rules.requirements(&route(&["staff", "support"]), &Method::GET, "/api/x/1");
        assert_eq!(needed.len(), 2);
        assert!(authorize(&needed, &["support".into(), "admin".into()]).is_ok());
        let refused = authorize(&needed, &["support".into()]).unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(refused.detail.unwrap().contains("admin"));
        assert!(authorize(&needed, &["admin".into()]).is_err());
    }

    #[test]
    fn a_rule_without_roles_or_with_a_bad_method_is_a_config_error() {
        let err = Rules::new(&[RuleConfig::new("/x", &[], &[])]).unwrap_err();
        assert!(err.to_string().contains("gateway.rules[0].roles"));
        let err = Rules::new(&[RuleConfig::new("/x", &["G T"], &["a"])]).unwrap_err();
        assert!(err.to_string().contains("gateway.rules[0].methods"));
    }

    #[test]
    fn lower_case_methods_are_accepted() {
        let rules = Rules::new(&[RuleConfig::new("/x", &["put"], &["a"])]).unwrap();
        assert_eq!(needs(&rules, Method::PUT, "/x"), [["a"]]);
        assert!(needs(&rules, Method::GET, "/x").is_empty());
    }
}
