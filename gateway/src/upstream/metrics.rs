//! The upstreams' metrics: instance health, attempts per group by outcome, and the green share.

use mercato_resilience::CircuitBreakerMetrics;
use mercato_resilience::register_metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Group, Instance};

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
pub(super) struct Metrics {
    healthy: Family<InstanceLabels, Gauge>,
    requests: Family<OutcomeLabels, Counter>,
    green_percent: Family<UpstreamLabel, Gauge>,
    pub(super) breakers: Option<CircuitBreakerMetrics>,
}

impl Metrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            breakers: Some(CircuitBreakerMetrics::register(registry)),
            ..Self::default()
        };
        register_metrics!(registry, {
            metrics.healthy => "gateway_upstream_instance_healthy", "Whether an upstream instance passes its health checks (1) or not (0)";
            metrics.requests => "gateway_upstream_requests", "Attempts sent to an upstream group, by outcome";
            metrics.green_percent => "gateway_upstream_green_percent", "Share of an upstream's requests sent to its green group";
        });
        metrics
    }

    pub(super) fn set_healthy(&self, upstream: &str, instance: &Instance) {
        self.healthy
            .get_or_create(&InstanceLabels {
                upstream: upstream.to_owned(),
                instance: instance.url().to_owned(),
            })
            .set(i64::from(instance.is_healthy()));
    }

    pub(super) fn forget_instance(&self, upstream: &str, url: &str) {
        self.healthy.remove(&InstanceLabels {
            upstream: upstream.to_owned(),
            instance: url.to_owned(),
        });
    }

    pub(super) fn set_green_percent(&self, upstream: &str, green_percent: u8) {
        self.green_percent
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_owned(),
            })
            .set(i64::from(green_percent));
    }
}

/// Attempts sent to one group, by outcome: the `gateway_upstream_requests_total` counters
/// themselves, made once per upstream so that an attempt only increments one, and read back for a
/// deployment to judge a switch by.
#[derive(Debug)]
pub(super) struct GroupOutcomes {
    pub(super) success: Counter,
    pub(super) failure: Counter,
}

impl GroupOutcomes {
    pub(super) fn new(metrics: &Metrics, upstream: &str, group: Group) -> Self {
        let counter = |outcome: &'static str| {
            metrics
                .requests
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
