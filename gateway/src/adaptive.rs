//! Adaptive concurrency per upstream (`[gateway.adaptive_concurrency]`): how many requests an
//! upstream may hold at once follows its measured latency against its minimum, in the manner of
//! Netflix's concurrency-limits (the gradient of `Gradient2`, the no-load latency of `Vegas`),
//! and requests past the limit are shed at once with `503` and `Retry-After` rather than queued,
//! so the latency of the admitted ones stays near the upstream's own.
//!
//! Each answered request is a sample of the round trip (to the response head). The gradient
//! `tolerance × minimum / sample`, held between 0.5 and 1, shrinks the limit when requests wait
//! longer than the fastest ever seen by more than the tolerance, and `queue_size` lets it grow
//! while they do not. The limit moves by `smoothing` of each step and never leaves
//! `min_limit..=max_limit`; while less than half of it is in use the limit stays where it is,
//! since such samples say nothing about what more load would do. The minimum is never raised
//! (an average would follow a queue as it builds, and the limit with it): an upstream whose
//! unloaded latency truly rises keeps a lower limit than it could until the gateway restarts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use crate::config::AdaptiveConcurrencyConfig;

/// Every upstream's limit when `config` is enabled (none otherwise), with the
/// `gateway_upstream_concurrency_limit` gauge registered.
#[must_use]
pub fn limits<'a>(
    upstreams: impl Iterator<Item = &'a str>,
    config: &AdaptiveConcurrencyConfig,
    registry: &mut prometheus_client::registry::Registry,
) -> BTreeMap<String, Arc<AdaptiveLimit>> {
    if !config.enabled {
        return BTreeMap::new();
    }
    let family = Family::<UpstreamLabel, Gauge>::default();
    registry.register(
        "gateway_upstream_concurrency_limit",
        "The adaptive limit on an upstream's requests at once",
        family.clone(),
    );
    upstreams
        .map(|name| {
            let gauge = family
                .get_or_create(&UpstreamLabel {
                    upstream: name.to_owned(),
                })
                .clone();
            (name.to_owned(), Arc::new(AdaptiveLimit::new(config, gauge)))
        })
        .collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Debug)]
struct State {
    limit: f64,
    /// The fastest sample, microseconds.
    min_rtt: Option<f64>,
}

/// One upstream's limit and the requests it holds.
#[derive(Debug)]
pub struct AdaptiveLimit {
    config: AdaptiveConcurrencyConfig,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    gauge: Gauge,
}

impl AdaptiveLimit {
    #[must_use]
    pub fn new(config: &AdaptiveConcurrencyConfig, gauge: Gauge) -> Self {
        let limit = f64::from(config.initial_limit);
        gauge.set(i64::from(config.initial_limit));
        Self {
            config: config.clone(),
            state: Mutex::new(State { limit, min_rtt: None }),
            in_flight: AtomicUsize::new(0),
            gauge,
        }
    }

    /// The limit now, rounded down.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).limit as usize
    }

    /// A place for one request, or `None` when the upstream holds as many as its limit.
    #[must_use]
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let limit = self.limit();
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| Permit {
            limit: Arc::clone(self),
            started: Instant::now(),
        })
    }

    fn sample(&self, rtt: Duration, in_flight: usize) {
        let rtt_us = (rtt.as_secs_f64() * 1e6).max(1.0);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let min = state.min_rtt.map_or(rtt_us, |m| m.min(rtt_us));
        state.min_rtt = Some(min);
        state.limit = next_limit(&self.config, state.limit, min, rtt_us, in_flight);
        self.gauge.set(state.limit as i64);
    }
}

/// One step; see the module docs.
fn next_limit(
    config: &AdaptiveConcurrencyConfig,
    limit: f64,
    min_rtt: f64,
    rtt: f64,
    in_flight: usize,
) -> f64 {
    if (in_flight as f64) < limit / 2.0 {
        return limit;
    }
    let gradient = (config.tolerance() * min_rtt / rtt).clamp(0.5, 1.0);
    let target = limit * gradient + f64::from(config.queue_size);
    let smoothed = limit * (1.0 - config.smoothing()) + target * config.smoothing();
    smoothed.clamp(f64::from(config.min_limit), f64::from(config.max_limit))
}

/// A request's place under the limit; [`finish`](Self::finish) records its latency, and
/// dropping it without (the caller gave up) only frees the place.
#[derive(Debug)]
pub struct Permit {
    limit: Arc<AdaptiveLimit>,
    started: Instant,
}

impl Permit {
    pub fn finish(self) {
        let in_flight = self.limit.in_flight.load(Ordering::Acquire);
        self.limit.sample(self.started.elapsed(), in_flight);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdaptiveConcurrencyConfig {
        AdaptiveConcurrencyConfig {
            enabled: true,
            initial_limit: 20,
            min_limit: 2,
            max_limit: 100,
            ..AdaptiveConcurrencyConfig::default()
        }
    }

    /// Runs `n` samples of `rtt_ms` with the limit fully used; returns the limit after.
    fn drive(limit: &AdaptiveLimit, n: usize, rtt_ms: u64) -> usize {
        for _ in 0..n {
            let in_flight = limit.limit();
            limit.sample(Duration::from_millis(rtt_ms), in_flight);
        }
        limit.limit()
    }

    #[test]
    fn a_steady_latency_lets_the_limit_grow_to_its_maximum() {
        let limit = AdaptiveLimit::new(&config(), Gauge::default());
        // Each sample adds `queue_size × smoothing` (0.8) while latency holds.
        assert!((27..=28).contains(&drive(&limit, 10, 50)));
        assert_eq!(drive(&limit, 1_000, 50), 100);
    }

    #[test]
    fn latency_rising_past_the_tolerance_shrinks_the_limit_to_its_minimum() {
        let limit = AdaptiveLimit::new(&config(), Gauge::default());
        drive(&limit, 200, 50);
        let before = limit.limit();
        // Queueing: every request now waits four times as long.
        let after = drive(&limit, 20, 200);
        assert!(after < before / 2, "{before} -> {after}");
    }

    #[test]
    fn an_upstream_that_queues_past_its_capacity_keeps_the_limit_well_below_the_maximum() {
        // Starting below the capacity, as a gateway does when traffic grows, so that the
        // unloaded latency is seen.
        let config = AdaptiveConcurrencyConfig {
            initial_limit: 5,
            ..config()
        };
        let limit = AdaptiveLimit::new(&config, Gauge::default());
        // Ten requests at once take 50 ms; more wait in line: latency grows with the load.
        let mut seen = Vec::new();
        for _ in 0..3_000 {
            let in_flight = limit.limit();
            let rtt = 50.0 * (in_flight as f64 / 10.0).max(1.0);
            limit.sample(Duration::from_secs_f64(rtt / 1000.0), in_flight);
            seen.push(limit.limit());
        }
        // It settles where latency is the tolerance above the minimum, plus the queue allowance:
        // 15 + 4 = 19, against 10 the upstream serves without waiting.
        let settled = &seen[2_000..];
        assert!(
            settled.iter().all(|l| (17..=21).contains(l)),
            "{:?}",
            &settled[..20]
        );
    }

    #[test]
    fn latency_within_the_tolerance_does_not_shrink_the_limit() {
        let limit = AdaptiveLimit::new(&config(), Gauge::default());
        drive(&limit, 50, 50);
        let before = limit.limit();
        assert!(
            drive(&limit, 50, 70) >= before,
            "1.4× the minimum is within the 1.5× tolerance"
        );
    }

    #[test]
    fn samples_taken_far_below_the_limit_leave_it_alone() {
        let limit = AdaptiveLimit::new(&config(), Gauge::default());
        for _ in 0..100 {
            limit.sample(Duration::from_millis(500), 3);
        }
        assert_eq!(limit.limit(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_past_the_limit_are_refused_and_a_finished_one_frees_its_place() {
        let config = AdaptiveConcurrencyConfig {
            initial_limit: 2,
            ..config()
        };
        let limit = Arc::new(AdaptiveLimit::new(&config, Gauge::default()));
        let first = limit.try_acquire().unwrap();
        let second = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());

        tokio::time::advance(Duration::from_millis(40)).await;
        first.finish();
        let third = limit.try_acquire().expect("a freed place");
        assert!(limit.try_acquire().is_none());
        drop((second, third));
        assert_eq!(limit.in_flight.load(Ordering::Acquire), 0);
        let min = limit.state.lock().unwrap().min_rtt.unwrap();
        assert!(
            (min - 40_000.0).abs() < 1.0,
            "the sample is the paused clock's 40 ms: {min}"
        );
    }
}
