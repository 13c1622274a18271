//! One instance of an upstream: its address, its circuit breaker (the passive outlier ejection:
//! an instance that keeps failing is skipped until a probe through its half-open breaker
//! succeeds), the active health checks' verdict, and the latency estimate the balancer reads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Uri;
use mercato_resilience::{CircuitBreaker, CircuitState};
use serde::Serialize;

use super::connections::{Connections, UpstreamTls};

/// A failed call counts as at least this slow in the latency estimate, so that an instance that
/// fails fast (a refused connection) does not look like the quickest.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Peak EWMA of response times (Finagle's): a slower sample is taken at once, faster ones are
/// blended in with a weight that grows with the time since the last sample, and the estimate
/// decays towards zero while no sample comes, so that an instance once slow (or failing) is
/// tried again instead of being starved of the samples that would clear it.
#[derive(Debug)]
struct Ewma {
    nanos: f64,
    at: Option<Instant>,
}

impl Ewma {
    fn observe(&mut self, sample: Duration, now: Instant, decay: Duration) {
        let sample = sample.as_secs_f64() * 1e9;
        match self.at {
            Some(at) if sample < self.nanos => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let keep = (-elapsed / decay.as_secs_f64()).exp();
                self.nanos = self.nanos * keep + sample * (1.0 - keep);
            }
            _ => self.nanos = sample,
        }
        self.at = Some(now);
    }

    fn at(&self, now: Instant, decay: Duration) -> f64 {
        match self.at {
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                self.nanos * (-elapsed / decay.as_secs_f64()).exp()
            }
            None => self.nanos,
        }
    }
}

/// The consecutive results of active checks, and the verdict they lead to.
#[derive(Debug, Default)]
struct Streak {
    successes: u32,
    failures: u32,
}

/// See the module docs.
#[derive(Debug)]
pub struct Instance {
    pub uri: Uri,
    /// Idle connections to it, shared by the requests that go there.
    pub connections: Arc<Connections>,
    url: String,
    pub(super) breaker: CircuitBreaker,
    decay: Duration,
    latency: Mutex<Ewma>,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
    streak: Mutex<Streak>,
    requests: AtomicU64,
    failures: AtomicU64,
}

/// What the admin API shows of an instance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceView {
    pub url: String,
    pub healthy: bool,
    pub circuit: &'static str,
    pub latency_ms: f64,
    pub in_flight: usize,
    pub requests: u64,
    pub failures: u64,
}

/// A health check's effect on an instance's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    Unchanged,
    BecameHealthy,
    BecameUnhealthy,
}

impl Instance {
    /// A new instance starts healthy, so that a gateway serves before its first round of checks.
    pub(super) fn new(uri: Uri, tls: Option<UpstreamTls>, breaker: CircuitBreaker, decay: Duration) -> Self {
        Self {
            url: uri.to_string().trim_end_matches('/').to_owned(),
            connections: Arc::new(Connections::new(&uri, tls)),
            uri,
            breaker,
            decay,
            latency: Mutex::new(Ewma { nanos: 0.0, at: None }),
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            streak: Mutex::new(Streak::default()),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Expected cost of one more request: the latency estimate times the requests waiting on
    /// this instance, so that a fast but swamped instance is not piled onto.
    #[must_use]
    pub fn load_score(&self) -> f64 {
        let latency = self.latency().as_secs_f64() * 1e9;
        #[allow(clippy::cast_precision_loss)]
        let waiting = (self.in_flight.load(Ordering::Relaxed) + 1) as f64;
        (latency + 1.0) * waiting
    }

    fn latency(&self) -> Duration {
        let ewma = self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Duration::from_secs_f64(ewma.at(Instant::now(), self.decay).max(0.0) / 1e9)
    }

    /// Marks a request as sent; the guard marks it done.
    pub(super) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a request started with [`start`](Self::start).
    pub(super) fn finish(&self, elapsed: Option<(Duration, bool)>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some((elapsed, failure)) = elapsed else {
            return;
        };
        if failure {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let sample = if failure {
            elapsed.max(FAILURE_PENALTY)
        } else {
            elapsed
        };
        self.latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(sample, Instant::now(), self.decay);
    }

    /// Counts one active check; flips the verdict after `threshold` results in a row.
    pub(super) fn record_check(
        &self,
        passed: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> HealthChange {
        let mut streak = self
            .streak
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let healthy = self.is_healthy();
        if passed {
            streak.failures = 0;
            streak.successes = streak.successes.saturating_add(1);
            if !healthy && streak.successes >= healthy_after {
                self.healthy.store(true, Ordering::Relaxed);
                // What it cost before it went down says nothing about the instance that is back
                // (often a new process); an old penalty would keep it out of P2C's choice until
                // the estimate faded, so it starts afresh and earns its estimate anew.
                *self
                    .latency
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Ewma { nanos: 0.0, at: None };
                return HealthChange::BecameHealthy;
            }
        } else {
            streak.successes = 0;
            streak.failures = streak.failures.saturating_add(1);
            if healthy && streak.failures >= unhealthy_after {
                self.healthy.store(false, Ordering::Relaxed);
                return HealthChange::BecameUnhealthy;
            }
        }
        HealthChange::Unchanged
    }

    #[must_use]
    pub fn view(&self) -> InstanceView {
        InstanceView {
            url: self.url.clone(),
            healthy: self.is_healthy(),
            circuit: match self.breaker.state() {
                CircuitState::Closed => "closed",
                CircuitState::Open => "open",
                CircuitState::HalfOpen => "half_open",
            },
            latency_ms: (self.latency().as_secs_f64() * 1e6).round() / 1e3,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> Instance {
        let breaker =
            CircuitBreaker::new("t", mercato_resilience::CircuitBreakerConfig::default(), None).unwrap();
        Instance::new(
            "http://127.0.0.1:1".parse().unwrap(),
            None,
            breaker,
            Duration::from_secs(10),
        )
    }

    #[test]
    fn a_slower_sample_is_taken_at_once_and_faster_ones_decay_in() {
        let decay = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut e = Ewma { nanos: 0.0, at: None };
        e.observe(Duration::from_millis(10), t0, decay);
        e.observe(Duration::from_millis(50), t0, decay);
        assert!((e.nanos - 50e6).abs() < 1.0);
        e.observe(Duration::from_millis(10), t0 + Duration::from_secs(10), decay);
        // One decay period: 1/e of the old estimate is kept.
        let expected = 50e6 * (-1.0f64).exp() + 10e6 * (1.0 - (-1.0f64).exp());
        assert!((e.nanos - expected).abs() < 1e3, "{}", e.nanos);
        // Without samples it fades: one period later, 1/e of it is left.
        let faded = e.at(t0 + Duration::from_secs(20), decay);
        assert!((faded - expected * (-1.0f64).exp()).abs() < 1e3, "{faded}");
    }

    #[test]
    fn a_failure_costs_at_least_the_penalty_and_requests_in_flight_raise_the_score() {
        let i = instance();
        let idle = i.load_score();
        i.start();
        assert!(i.load_score() > idle);
        i.finish(Some((Duration::from_millis(1), true)));
        assert!(i.latency() > FAILURE_PENALTY / 2);
        assert_eq!(i.view().failures, 1);
        assert_eq!(i.view().in_flight, 0);
    }

    #[test]
    fn the_verdict_flips_only_after_the_thresholds() {
        let i = instance();
        assert_eq!(i.record_check(false, 2, 2), HealthChange::Unchanged);
        assert_eq!(i.record_check(false, 2, 2), HealthChange::BecameUnhealthy);
        assert!(!i.is_healthy());
        assert_eq!(i.record_check(true, 2, 2), HealthChange::Unchanged);
        assert_eq!(i.record_check(false, 2, 2), HealthChange::Unchanged);
        assert_eq!(i.record_check(true, 2, 2), HealthChange::Unchanged);
        i.start();
        i.finish(Some((Duration::from_millis(1), true)));
        assert!(i.latency() > FAILURE_PENALTY / 2);
        assert_eq!(i.record_check(true, 2, 2), HealthChange::BecameHealthy);
        assert!(i.is_healthy());
        assert_eq!(i.latency(), Duration::ZERO, "back with a clean estimate");
    }
}
