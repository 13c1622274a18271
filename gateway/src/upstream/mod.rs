//! The instances behind each upstream name, in two groups for blue/green deployments, and the
//! choice of an instance for each attempt.
//!
//! - [`instance`]: an instance's breaker (passive outlier ejection), health verdict and latency
//!   estimate.
//! - [`balancer`]: round robin or power of two choices on the latency estimate.
//! - [`connections`]: each instance's idle connections, driven by the requests that use them.
//! - [`http1`]: the HTTP/1.1 those connections speak: request heads written, answers parsed.
//! - [`health`]: the active checks against every instance's `/ready`.
//! - [`pick`]: the choice of group and instance for an attempt, and its outcome's record.
//! - [`changes`]: instances added and removed and the split moved at run time.
//! - [`shared`]: the admin state kept in a file or Redis, shared by every gateway.
//! - `metrics`: instance health, attempts per group by outcome, the green share.
//!
//! An attempt first picks the group (`green_percent` of requests go to green), then tries the
//! group's healthy instances in the balancer's order, taking the first whose breaker admits it.
//! When no instance of the group passes its checks, all of them are tried rather than none, so
//! that a failing health endpoint cannot take a working service offline. The instance lists and
//! the split change at run time through the admin API; each change is one atomic swap, so an
//! attempt sees the old state or the new one, and requests in flight finish where they are.

pub mod balancer;
pub mod changes;
pub mod connections;
pub mod health;
pub mod http1;
pub mod instance;
mod metrics;
pub mod pick;
pub mod shared;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::Uri;
use mercato_resilience::CircuitBreaker;
use mercato_runtime::tls::ClientTls;
use mercato_security::tls::{TlsError, TlsFiles};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::StartError;
use crate::config::{BalancingPolicy, GatewayConfig};
pub use changes::{ChangeError, parse_instance};
use connections::UpstreamTls;
pub use instance::{Instance, InstanceView};
use metrics::{GroupOutcomes, Metrics};
pub use pick::Pick;

/// One of an upstream's two instance groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Blue,
    Green,
}

impl Group {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Green => "green",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Blue => 0,
            Self::Green => 1,
        }
    }

    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::Blue => Self::Green,
            Self::Green => Self::Blue,
        }
    }
}

/// What the admin API shows of a group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupView {
    pub instances: Vec<InstanceView>,
    pub requests: u64,
    pub failures: u64,
}

/// What the admin API shows of an upstream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamView {
    pub name: String,
    pub policy: BalancingPolicy,
    /// The group that takes most traffic (green at 50 % or more).
    pub live: Group,
    pub green_percent: u8,
    pub smoke_path: String,
    pub blue: GroupView,
    pub green: GroupView,
}

/// One upstream: two groups of instances and the split between them.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    groups: [RwLock<Arc<Vec<Arc<Instance>>>>; 2],
    outcomes: [GroupOutcomes; 2],
    green_percent: AtomicU8,
    turn: AtomicUsize,
    smoke_path: String,
}

/// Every upstream, by name.
#[derive(Debug, Clone)]
pub struct Upstreams {
    map: Arc<BTreeMap<String, Arc<Upstream>>>,
    policy: BalancingPolicy,
    decay: Duration,
    breaker: mercato_resilience::CircuitBreakerConfig,
    metrics: Metrics,
    /// The gateway's certificate for `https://` instances.
    tls: Option<TlsFiles>,
}

impl Upstreams {
    /// The instances given by name in `instances`, with `[gateway.upstreams]` replacing blue
    /// and adding green; metrics registered in `registry`.
    ///
    /// # Errors
    /// An upstream without instances, or an instance URL that is not `http://host:port`.
    pub fn new(
        instances: &BTreeMap<String, Vec<String>>,
        gateway: &GatewayConfig,
        tls: Option<TlsFiles>,
        registry: &mut Registry,
    ) -> Result<Self, StartError> {
        let mut this = Self {
            map: Arc::new(BTreeMap::new()),
            policy: gateway.load_balancing.policy,
            decay: Duration::from_millis(gateway.load_balancing.latency_decay_ms),
            breaker: gateway.circuit_breaker.to_config(),
            metrics: Metrics::register(registry),
            tls,
        };
        let mut names: Vec<&String> = instances.keys().collect();
        names.extend(gateway.upstreams.keys().filter(|n| !instances.contains_key(*n)));
        let mut map = BTreeMap::new();
        for name in names {
            let settings = gateway.upstreams.get(name).cloned().unwrap_or_default();
            let blue = if settings.blue.is_empty() {
                instances.get(name).cloned().unwrap_or_default()
            } else {
                settings.blue.clone()
            };
            let key = |group: &str| {
                if gateway.upstreams.contains_key(name) {
                    format!("gateway.upstreams.{name}.{group}")
                } else {
                    format!("upstreams.{name}")
                }
            };
            if blue.is_empty() {
                return Err(StartError::Config {
                    key: key("blue"),
                    message: "has no instances".into(),
                });
            }
            let mut groups = [Vec::new(), Vec::new()];
            for (group, urls) in [(Group::Blue, &blue), (Group::Green, &settings.green)] {
                for url in urls {
                    let uri = parse_instance(url).map_err(|message| StartError::Config {
                        key: key(group.as_str()),
                        message,
                    })?;
                    groups[group.index()].push(this.instance(name, uri).map_err(|message| {
                        StartError::Config {
                            key: key(group.as_str()),
                            message,
                        }
                    })?);
                }
            }
            let [blue, green] = groups;
            this.metrics.set_green_percent(name, settings.green_percent);
            map.insert(
                name.clone(),
                Arc::new(Upstream {
                    name: name.clone(),
                    groups: [RwLock::new(Arc::new(blue)), RwLock::new(Arc::new(green))],
                    outcomes: [Group::Blue, Group::Green].map(|g| GroupOutcomes::new(&this.metrics, name, g)),
                    green_percent: AtomicU8::new(settings.green_percent),
                    turn: AtomicUsize::new(0),
                    smoke_path: settings.smoke_path,
                }),
            );
        }
        this.map = Arc::new(map);
        Ok(this)
    }

    /// A new instance of `upstream` at `uri`; an `https://` one is reached over mutual TLS and
    /// must be the service `upstream` names.
    fn instance(&self, upstream: &str, uri: Uri) -> Result<Arc<Instance>, String> {
        let tls = if uri.scheme_str() == Some("https") {
            let Some(config) = self.client_tls(upstream).map_err(|e| e.to_string())? else {
                return Err(format!(
                    "{uri} is https, but the gateway has no [tls] certificate"
                ));
            };
            Some(UpstreamTls::new(&config, &uri)?)
        } else {
            None
        };
        let authority = uri.authority().map_or("", |a| a.as_str());
        // Named per instance: it is the instance that is ejected, not the whole upstream.
        let breaker = CircuitBreaker::new(
            &format!("{upstream}@{authority}"),
            self.breaker.clone(),
            self.metrics.breakers.clone(),
        )
        .map_err(|e| format!("gateway.circuit_breaker: {e}"))?;
        let instance = Arc::new(Instance::new(uri, tls, breaker, self.decay));
        self.metrics.set_healthy(upstream, &instance);
        Ok(instance)
    }

    /// How the gateway's calls reach `upstream` over mutual TLS: its `[tls]` certificate
    /// presented, and only a server whose certificate names `upstream` accepted. `None` without
    /// `[tls]`. The proxy's connections, their health checks and the console's client all take
    /// it from here, so every call to a service is held to the same identity.
    ///
    /// # Errors
    /// A certificate, key or CA that cannot be read.
    pub fn client_tls(&self, upstream: &str) -> Result<Option<ClientTls>, TlsError> {
        self.tls
            .as_ref()
            .map(|files| mercato_runtime::tls::client_for(files, upstream))
            .transpose()
    }

    /// The names of the upstreams.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.map.get(name)
    }

    /// Every instance of every upstream, both groups, with its upstream's name.
    #[must_use]
    pub fn all_instances(&self) -> Vec<(String, Arc<Instance>)> {
        let mut all = Vec::new();
        for (name, upstream) in self.map.iter() {
            for group in [Group::Blue, Group::Green] {
                all.extend(
                    upstream
                        .instances(group)
                        .iter()
                        .map(|i| (name.clone(), Arc::clone(i))),
                );
            }
        }
        all
    }

    /// The admin view of an upstream.
    #[must_use]
    pub fn view(&self, upstream: &Upstream) -> UpstreamView {
        let group = |g: Group| {
            let outcomes = &upstream.outcomes[g.index()];
            let failures = outcomes.failure.get();
            GroupView {
                instances: upstream.instances(g).iter().map(|i| i.view()).collect(),
                requests: outcomes.success.get() + failures,
                failures,
            }
        };
        let green_percent = upstream.green_percent.load(Ordering::Relaxed);
        UpstreamView {
            name: upstream.name.clone(),
            policy: self.policy,
            live: if green_percent >= 50 {
                Group::Green
            } else {
                Group::Blue
            },
            green_percent,
            smoke_path: upstream.smoke_path.clone(),
            blue: group(Group::Blue),
            green: group(Group::Green),
        }
    }

    pub(crate) fn health_changed(&self, upstream: &str, instance: &Instance) {
        self.metrics.set_healthy(upstream, instance);
    }
}

impl Upstream {
    /// The group's instances now.
    #[must_use]
    pub fn instances(&self, group: Group) -> Arc<Vec<Arc<Instance>>> {
        Arc::clone(
            &self.groups[group.index()]
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    #[must_use]
    pub fn smoke_path(&self) -> &str {
        &self.smoke_path
    }

    /// The percentage of traffic `group` gets.
    fn share(&self, group: Group) -> u8 {
        let green = self.green_percent.load(Ordering::Relaxed);
        match group {
            Group::Green => green,
            Group::Blue => 100 - green,
        }
    }
}

#[cfg(test)]
mod tests;
