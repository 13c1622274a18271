//! The instances behind each upstream name, in two groups for blue/green deployments, and the
//! choice of an instance for each attempt.
//!
//! - [`instance`]: an instance's breaker (passive outlier ejection), health verdict and latency
//!   estimate.
//! - [`balancer`]: round robin or power of two choices on the latency estimate.
//! - [`health`]: the active checks against every instance's `/ready`.
//!
//! An attempt first picks the group (`green_percent` of requests go to green), then tries the
//! group's healthy instances in the balancer's order, taking the first whose breaker admits it.
//! When no instance of the group passes its checks, all of them are tried rather than none, so
//! that a failing health endpoint cannot take a working service offline. The instance lists and
//! the split change at run time through the admin API; each change is one atomic swap, so an
//! attempt sees the old state or the new one, and requests in flight finish where they are.

pub mod balancer;
pub mod health;
pub mod instance;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::Uri;
use mercato_resilience::{CircuitBreaker, CircuitBreakerMetrics, ResilienceError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::StartError;
use crate::config::{BalancingPolicy, GatewayConfig};
pub use instance::{Instance, InstanceView};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    upstream: String,
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    upstream: String,
    group: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

/// The upstreams' metrics.
#[derive(Debug, Clone, Default)]
struct Metrics {
    healthy: Family<InstanceLabels, Gauge>,
    requests: Family<OutcomeLabels, Counter>,
    green_percent: Family<UpstreamLabel, Gauge>,
    breakers: Option<CircuitBreakerMetrics>,
}

/// Attempts sent to one group, by outcome: the `gateway_upstream_requests_total` counters
/// themselves, made once per upstream so that an attempt only increments one, and read back for a
/// deployment to judge a switch by.
#[derive(Debug)]
struct GroupOutcomes {
    success: Counter,
    failure: Counter,
}

impl GroupOutcomes {
    fn new(family: &Family<OutcomeLabels, Counter>, upstream: &str, group: Group) -> Self {
        let counter = |outcome: &'static str| {
            family
                .get_or_create(&OutcomeLabels {
                    upstream: upstream.to_owned(),
                    group: group.as_str(),
                    outcome,
                })
                .clone()
        };
        Self {
            success: counter("success"),
            failure: counter("failure"),
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

/// Why an instance list could not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    InvalidUrl(String),
    #[error("{url} is already an instance of {upstream}")]
    Exists { upstream: String, url: String },
    #[error("{url} is not an instance of {upstream}")]
    NotFound { upstream: String, url: String },
    #[error("the {group} group of {upstream} would have no instances while it takes traffic")]
    WouldEmpty { upstream: String, group: &'static str },
}

/// The instance an attempt goes to, with its breaker's leave; dropping it without
/// [`finish`](Self::finish) (the caller gave up) records nothing against the instance.
#[derive(Debug)]
pub struct Pick {
    pub instance: Arc<Instance>,
    upstream: Arc<Upstream>,
    group: Group,
    permit: Option<mercato_resilience::circuit_breaker::Permit>,
    started: std::time::Instant,
    outcome: Option<bool>,
}

impl Pick {
    /// Reports the attempt: `failure` counts against the instance (breaker, estimate, stats).
    pub fn finish(mut self, failure: bool) {
        if let Some(permit) = self.permit.take() {
            permit.record(failure);
        }
        self.outcome = Some(failure);
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.instance
            .finish(self.outcome.map(|failure| (elapsed, failure)));
        if let Some(failure) = self.outcome {
            let outcomes = &self.upstream.outcomes[self.group.index()];
            if failure {
                outcomes.failure.inc();
            } else {
                outcomes.success.inc();
            }
        }
    }
}

/// Every upstream, by name.
#[derive(Debug, Clone)]
pub struct Upstreams {
    map: Arc<BTreeMap<String, Arc<Upstream>>>,
    policy: BalancingPolicy,
    decay: Duration,
    breaker: mercato_resilience::CircuitBreakerConfig,
    metrics: Metrics,
}

/// `url` as an instance address: `http://host:port`, nothing after it.
///
/// # Errors
/// A description of what is wrong with it.
pub fn parse_instance(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("{url:?} is not a URL"))?;
    let bare = uri
        .path_and_query()
        .is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
    if uri.scheme_str() != Some("http") || uri.authority().is_none() || !bare {
        return Err(format!("{url:?} must be http://host:port"));
    }
    Ok(uri)
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
        registry: &mut Registry,
    ) -> Result<Self, StartError> {
        let metrics = Metrics {
            breakers: Some(CircuitBreakerMetrics::register(registry)),
            ..Metrics::default()
        };
        registry.register(
            "gateway_upstream_instance_healthy",
            "Whether an upstream instance passes its health checks (1) or not (0)",
            metrics.healthy.clone(),
        );
        registry.register(
            "gateway_upstream_requests",
            "Attempts sent to an upstream group, by outcome",
            metrics.requests.clone(),
        );
        registry.register(
            "gateway_upstream_green_percent",
            "Share of an upstream's requests sent to its green group",
            metrics.green_percent.clone(),
        );
        let mut this = Self {
            map: Arc::new(BTreeMap::new()),
            policy: gateway.load_balancing.policy,
            decay: Duration::from_millis(gateway.load_balancing.latency_decay_ms),
            breaker: gateway.circuit_breaker.to_config(),
            metrics,
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
                    groups[group.index()].push(this.instance(name, uri).map_err(|e| StartError::Config {
                        key: "gateway.circuit_breaker".into(),
                        message: e.to_string(),
                    })?);
                }
            }
            let [blue, green] = groups;
            this.metrics
                .green_percent
                .get_or_create(&UpstreamLabel {
                    upstream: name.clone(),
                })
                .set(i64::from(settings.green_percent));
            map.insert(
                name.clone(),
                Arc::new(Upstream {
                    name: name.clone(),
                    groups: [RwLock::new(Arc::new(blue)), RwLock::new(Arc::new(green))],
                    outcomes: [Group::Blue, Group::Green]
                        .map(|g| GroupOutcomes::new(&this.metrics.requests, name, g)),
                    green_percent: AtomicU8::new(settings.green_percent),
                    turn: AtomicUsize::new(0),
                    smoke_path: settings.smoke_path,
                }),
            );
        }
        this.map = Arc::new(map);
        Ok(this)
    }

    fn instance(&self, upstream: &str, uri: Uri) -> Result<Arc<Instance>, mercato_resilience::ConfigError> {
        let authority = uri.authority().map_or("", |a| a.as_str());
        // Named per instance: it is the instance that is ejected, not the whole upstream.
        let breaker = CircuitBreaker::new(
            &format!("{upstream}@{authority}"),
            self.breaker.clone(),
            self.metrics.breakers.clone(),
        )?;
        let instance = Arc::new(Instance::new(uri, breaker, self.decay));
        self.set_healthy_gauge(upstream, &instance);
        Ok(instance)
    }

    fn set_healthy_gauge(&self, upstream: &str, instance: &Instance) {
        self.metrics
            .healthy
            .get_or_create(&InstanceLabels {
                upstream: upstream.to_owned(),
                instance: instance.url().to_owned(),
            })
            .set(i64::from(instance.is_healthy()));
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

    /// The instance for one attempt at `name`; see the module docs.
    ///
    /// # Errors
    /// [`ResilienceError::CircuitOpen`] when every candidate's breaker refuses, with the soonest
    /// time one may admit again; `Ok(None)` for an unknown upstream.
    pub fn pick<E>(&self, name: &str) -> Result<Option<Pick>, ResilienceError<E>> {
        let Some(upstream) = self.map.get(name) else {
            return Ok(None);
        };
        let mut rng = rand::thread_rng();
        let green_percent = upstream.green_percent.load(Ordering::Relaxed);
        let wanted = if green_percent > 0 && rand::Rng::gen_range(&mut rng, 0..100u8) < green_percent {
            Group::Green
        } else {
            Group::Blue
        };
        let mut group = wanted;
        let mut instances = upstream.instances(group);
        if instances.is_empty() {
            group = group.other();
            instances = upstream.instances(group);
        }
        let candidates: Vec<&Arc<Instance>> = if instances.iter().all(|i| i.is_healthy()) {
            instances.iter().collect()
        } else {
            let healthy: Vec<_> = instances.iter().filter(|i| i.is_healthy()).collect();
            if healthy.is_empty() {
                instances.iter().collect()
            } else {
                healthy
            }
        };
        let order = if candidates.len() == 1 {
            vec![0]
        } else {
            let turn = upstream.turn.fetch_add(1, Ordering::Relaxed);
            balancer::preference(
                self.policy,
                candidates.len(),
                turn,
                |i| candidates[i].load_score(),
                &mut rng,
            )
        };
        let mut refusal = None;
        for i in order {
            let instance = candidates[i];
            match instance.breaker.try_acquire::<E>() {
                Ok(permit) => {
                    instance.start();
                    return Ok(Some(Pick {
                        instance: Arc::clone(instance),
                        upstream: Arc::clone(upstream),
                        group,
                        permit: Some(permit),
                        started: std::time::Instant::now(),

                        outcome: None,
                    }));
                }
                Err(ResilienceError::CircuitOpen { retry_after, .. }) => {
                    let soonest = refusal.map_or(retry_after, |r: Duration| r.min(retry_after));
                    refusal = Some(soonest);
                }
                Err(other) => return Err(other),
            }
        }
        Err(ResilienceError::CircuitOpen {
            name: upstream.name.as_str().into(),
            retry_after: refusal.unwrap_or(Duration::from_secs(1)),
        })
    }

    /// Adds an instance to a group.
    ///
    /// # Errors
    /// A bad URL, or one the upstream has already.
    pub fn add(&self, name: &str, group: Group, url: &str) -> Result<InstanceView, ChangeError> {
        let upstream = self.upstream_or_not_found(name, url)?;
        let uri = parse_instance(url).map_err(ChangeError::InvalidUrl)?;
        let instance = self
            .instance(name, uri)
            .map_err(|e| ChangeError::InvalidUrl(e.to_string()))?;
        let mut slot = upstream.groups[group.index()]
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let exists = [Group::Blue, Group::Green].iter().any(|g| {
            let list = if *g == group {
                Arc::clone(&slot)
            } else {
                upstream.instances(*g)
            };
            list.iter().any(|i| i.url() == instance.url())
        });
        if exists {
            return Err(ChangeError::Exists {
                upstream: name.to_owned(),
                url: instance.url().to_owned(),
            });
        }
        let mut next = Vec::clone(&slot);
        next.push(Arc::clone(&instance));
        *slot = Arc::new(next);
        tracing::info!(
            upstream = name,
            group = group.as_str(),
            instance = instance.url(),
            "instance added"
        );
        Ok(instance.view())
    }

    /// Removes an instance from whichever group holds it. A group that takes traffic keeps at
    /// least one instance.
    ///
    /// # Errors
    /// Unknown instance, or the last one of a group in use.
    pub fn remove(&self, name: &str, url: &str) -> Result<(), ChangeError> {
        let upstream = self.upstream_or_not_found(name, url)?;
        let wanted = url.trim_end_matches('/');
        for group in [Group::Blue, Group::Green] {
            let mut slot = upstream.groups[group.index()]
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(position) = slot.iter().position(|i| i.url() == wanted) else {
                continue;
            };
            if slot.len() == 1 && upstream.share(group) > 0 {
                return Err(ChangeError::WouldEmpty {
                    upstream: name.to_owned(),
                    group: group.as_str(),
                });
            }
            let mut next = Vec::clone(&slot);
            let removed = next.remove(position);
            *slot = Arc::new(next);
            self.metrics.healthy.remove(&InstanceLabels {
                upstream: name.to_owned(),
                instance: removed.url().to_owned(),
            });
            tracing::info!(
                upstream = name,
                group = group.as_str(),
                instance = wanted,
                "instance removed"
            );
            return Ok(());
        }
        Err(ChangeError::NotFound {
            upstream: name.to_owned(),
            url: wanted.to_owned(),
        })
    }

    /// Sends `green_percent` of requests to green, the rest to blue, from the next attempt on.
    ///
    /// # Errors
    /// A group that would get traffic but has no instances.
    pub fn set_split(&self, name: &str, green_percent: u8) -> Result<UpstreamView, ChangeError> {
        let upstream = self.upstream_or_not_found(name, "")?;
        let green_percent = green_percent.min(100);
        for (group, share) in [(Group::Blue, 100 - green_percent), (Group::Green, green_percent)] {
            if share > 0 && upstream.instances(group).is_empty() {
                return Err(ChangeError::WouldEmpty {
                    upstream: name.to_owned(),
                    group: group.as_str(),
                });
            }
        }
        let before = upstream.green_percent.swap(green_percent, Ordering::SeqCst);
        self.metrics
            .green_percent
            .get_or_create(&UpstreamLabel {
                upstream: name.to_owned(),
            })
            .set(i64::from(green_percent));
        tracing::warn!(
            upstream = name,
            from = before,
            to = green_percent,
            "green share changed"
        );
        Ok(self.view(upstream))
    }

    fn upstream_or_not_found(&self, name: &str, url: &str) -> Result<&Arc<Upstream>, ChangeError> {
        self.map.get(name).ok_or_else(|| ChangeError::NotFound {
            upstream: name.to_owned(),
            url: url.to_owned(),
        })
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
        self.set_healthy_gauge(upstream, instance);
    }
}

impl Upstream {
    /// The group's instances now.
    #[must_use]
    pub fn instances(&self, group: Group) -> Arc<Vec<Arc<Instance>>> {
        Arc::clone(
            &self.groups[group.index()]
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
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
mod tests {
    use super::*;
    use crate::config::UpstreamSettings;

    fn upstreams(urls: &[&str], adjust: impl FnOnce(&mut GatewayConfig)) -> Result<Upstreams, StartError> {
        let config = BTreeMap::from([("a".to_owned(), urls.iter().map(|u| (*u).to_owned()).collect())]);
        let mut gateway = GatewayConfig::default();
        adjust(&mut gateway);
        Upstreams::new(&config, &gateway, &mut Registry::default())
    }

    fn port(pick: &Pick) -> u16 {
        pick.instance.uri.port_u16().unwrap()
    }

    #[test]
    fn round_robin_picks_in_turn() {
        let u = upstreams(&["http://127.0.0.1:1", "http://127.0.0.1:2"], |g| {
            g.load_balancing.policy = BalancingPolicy::RoundRobin;
        })
        .unwrap();
        let picks: Vec<_> = (0..4)
            .map(|_| port(&u.pick::<()>("a").unwrap().unwrap()))
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        assert!(u.pick::<()>("b").unwrap().is_none());
    }

    #[test]
    fn non_http_instances_are_refused() {
        assert!(upstreams(&["ftp://x"], |_| ()).is_err());
        assert!(upstreams(&["http://127.0.0.1:1/path"], |_| ()).is_err());
        assert!(upstreams(&[], |_| ()).is_err());
    }

    #[test]
    fn unhealthy_instances_are_skipped_unless_all_are() {
        let u = upstreams(&["http://127.0.0.1:1", "http://127.0.0.1:2"], |_| ()).unwrap();
        let instances = u.get("a").unwrap().instances(Group::Blue);
        instances[0].record_check(false, 1, 1);
        for _ in 0..20 {
            assert_eq!(port(&u.pick::<()>("a").unwrap().unwrap()), 2);
        }
        instances[1].record_check(false, 1, 1);
        assert!(u.pick::<()>("a").unwrap().is_some(), "all unhealthy: still tried");
    }

    #[test]
    fn the_split_sends_traffic_to_green_and_refuses_an_empty_group() {
        let u = upstreams(&["http://127.0.0.1:1"], |g| {
            g.upstreams.insert(
                "a".into(),
                UpstreamSettings {
                    green: vec!["http://127.0.0.1:9".into()],
                    ..UpstreamSettings::default()
                },
            );
        })
        .unwrap();
        assert_eq!(port(&u.pick::<()>("a").unwrap().unwrap()), 1);
        let view = u.set_split("a", 100).unwrap();
        assert_eq!(view.live, Group::Green);
        for _ in 0..10 {
            assert_eq!(port(&u.pick::<()>("a").unwrap().unwrap()), 9);
        }
        u.remove("a", "http://127.0.0.1:1").unwrap();
        assert_eq!(
            u.set_split("a", 0).unwrap_err(),
            ChangeError::WouldEmpty {
                upstream: "a".into(),
                group: "blue"
            }
        );
        assert!(matches!(
            u.remove("a", "http://127.0.0.1:9"),
            Err(ChangeError::WouldEmpty { .. })
        ));
    }

    #[test]
    fn instances_are_added_and_removed_once() {
        let u = upstreams(&["http://127.0.0.1:1"], |_| ()).unwrap();
        u.add("a", Group::Blue, "http://127.0.0.1:2/").unwrap();
        assert!(matches!(
            u.add("a", Group::Green, "http://127.0.0.1:2"),
            Err(ChangeError::Exists { .. })
        ));
        assert!(matches!(
            u.add("a", Group::Blue, "nope"),
            Err(ChangeError::InvalidUrl(_))
        ));
        assert_eq!(u.get("a").unwrap().instances(Group::Blue).len(), 2);
        u.remove("a", "http://127.0.0.1:1").unwrap();
        assert!(matches!(
            u.remove("a", "http://127.0.0.1:1"),
            Err(ChangeError::NotFound { .. })
        ));
        assert!(matches!(
            u.remove("a", "http://127.0.0.1:2"),
            Err(ChangeError::WouldEmpty { .. })
        ));
    }

    #[test]
    fn a_failed_pick_is_recorded_against_its_instance() {
        let u = upstreams(&["http://127.0.0.1:1"], |_| ()).unwrap();
        u.pick::<()>("a").unwrap().unwrap().finish(true);
        let view = u.view(u.get("a").unwrap());
        assert_eq!((view.blue.requests, view.blue.failures), (1, 1));
        assert_eq!(view.blue.instances[0].failures, 1);
        assert_eq!(view.blue.instances[0].in_flight, 0);
    }
}
