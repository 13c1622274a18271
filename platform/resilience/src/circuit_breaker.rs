//! A circuit breaker with resilience4j's states and count-based sliding window.
//!
//! - `Closed` admits every call and records the last `sliding_window_size` outcomes. Once at least
//!   `minimum_number_of_calls` are recorded, it opens when the failure rate **or** the slow-call
//!   rate reaches its threshold.
//! - `Open` rejects at once with [`ResilienceError::CircuitOpen`] (saying when to retry) until
//!   `wait_duration_in_open` has passed; the next call then moves it to `HalfOpen`.
//! - `HalfOpen` admits `permitted_calls_in_half_open` probes, each bounded by `probe_timeout` so a
//!   hung probe cannot keep the breaker half-open forever. When all probes are in, it closes if
//!   both rates are below their thresholds and opens again otherwise.
//!
//! Outcomes of calls admitted before a transition are ignored after it (each state has a
//! generation), so a slow straggler from `Closed` cannot decide a `HalfOpen` verdict.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::{self, FutureExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tower::Layer;

use crate::error::{ConfigError, ResilienceError, check};
use crate::layered::{Below, Call, Layered, Policy};
use crate::register_metrics;

/// A breaker's state, named as resilience4j names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Admits calls.
    Closed,
    /// Rejects calls at once.
    Open,
    /// Admits a bounded number of probes.
    HalfOpen,
}

impl CircuitState {
    const ALL: [Self; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    /// The label used in metrics and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Breaker settings; defaults follow resilience4j's thresholds with Hystrix-sized windows, which
/// suit internal traffic of tens of calls per second.
#[derive(Debug, Clone)]
pub struct CircuitBreakerConfig {
    /// Share of failed calls (0.0–1.0) at which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Share of slow calls (0.0–1.0) at which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow.
    pub slow_call_duration_threshold: Duration,
    /// How many of the latest outcomes the closed breaker judges.
    pub sliding_window_size: usize,
    /// No verdict before this many outcomes are in the window.
    pub minimum_number_of_calls: usize,
    pub wait_duration_in_open: Duration,
    pub permitted_calls_in_half_open: usize,
    /// Limit on each half-open probe; a probe that exceeds it counts as a failure.
    pub probe_timeout: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 0.5,
            slow_call_duration_threshold: Duration::from_secs(1),
            sliding_window_size: 50,
            minimum_number_of_calls: 20,
            wait_duration_in_open: Duration::from_secs(5),
            permitted_calls_in_half_open: 3,
            probe_timeout: Duration::from_secs(2),
        }
    }
}

impl CircuitBreakerConfig {
    /// # Errors
    /// A threshold outside (0, 1], an empty window, a minimum larger than the window, or no probes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate = |r: f64| r > 0.0 && r <= 1.0;
        check(
            rate(self.failure_rate_threshold),
            "failure_rate_threshold",
            "must be in (0, 1]",
        )?;
        check(
            rate(self.slow_call_rate_threshold),
            "slow_call_rate_threshold",
            "must be in (0, 1]",
        )?;
        check(
            self.sliding_window_size > 0,
            "sliding_window_size",
            "must be at least 1",
        )?;
        check(
            (1..=self.sliding_window_size).contains(&self.minimum_number_of_calls),
            "minimum_number_of_calls",
            "must be between 1 and sliding_window_size",
        )?;
        check(
            self.permitted_calls_in_half_open > 0,
            "permitted_calls_in_half_open",
            "must be at least 1",
        )?;
        check(!self.probe_timeout.is_zero(), "probe_timeout", "must be positive")
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    name: String,
    state: String,
}

/// `circuit_breaker_transitions_total{name,state}` (transitions into `state`) and
/// `circuit_breaker_state{name,state}` (1 for the current state, 0 for the others). Register once
/// per registry and share among breakers.
#[derive(Debug, Clone, Default)]
pub struct CircuitBreakerMetrics {
    transitions: Family<StateLabels, Counter>,
    state: Family<StateLabels, Gauge>,
}

impl CircuitBreakerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        register_metrics!(registry, {
            metrics.transitions => "circuit_breaker_transitions", "Circuit breaker state changes, by breaker and the state entered";
            metrics.state => "circuit_breaker_state", "1 for each breaker's current state, 0 for its other states";
        });
        metrics
    }

    fn labels(name: &str, state: CircuitState) -> StateLabels {
        StateLabels {
            name: name.to_owned(),
            state: state.as_str().to_owned(),
        }
    }

    fn set_state(&self, name: &str, current: CircuitState) {
        for state in CircuitState::ALL {
            self.state
                .get_or_create(&Self::labels(name, state))
                .set(i64::from(state == current));
        }
    }

    fn transition(&self, name: &str, to: CircuitState) {
        self.transitions.get_or_create(&Self::labels(name, to)).inc();
        self.set_state(name, to);
    }
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    failure: bool,
    slow: bool,
}

/// The last `capacity` outcomes with running counts, so a verdict costs nothing per call.
#[derive(Debug)]
struct Window {
    capacity: usize,
    outcomes: VecDeque<Outcome>,
    failures: usize,
    slow: usize,
}

impl Window {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            outcomes: VecDeque::with_capacity(capacity),
            failures: 0,
            slow: 0,
        }
    }

    fn push(&mut self, outcome: Outcome) {
        if self.outcomes.len() == self.capacity
            && let Some(old) = self.outcomes.pop_front()
        {
            self.failures -= usize::from(old.failure);
            self.slow -= usize::from(old.slow);
        }
        self.failures += usize::from(outcome.failure);
        self.slow += usize::from(outcome.slow);
        self.outcomes.push_back(outcome);
    }

    fn len(&self) -> usize {
        self.outcomes.len()
    }

    #[allow(clippy::cast_precision_loss)] // windows hold far fewer than 2^52 calls
    fn exceeds(&self, config: &CircuitBreakerConfig) -> bool {
        let n = self.len() as f64;
        self.failures as f64 / n >= config.failure_rate_threshold
            || self.slow as f64 / n >= config.slow_call_rate_threshold
    }
}

#[derive(Debug)]
enum State {
    Closed(Window),
    Open { until: Instant },
    HalfOpen { admitted: usize, probes: Window },
}

impl State {
    fn name(&self) -> CircuitState {
        match self {
            Self::Closed(_) => CircuitState::Closed,
            Self::Open { .. } => CircuitState::Open,
            Self::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    generation: u64,
}

#[derive(Debug)]
struct Shared {
    name: Arc<str>,
    config: CircuitBreakerConfig,
    metrics: Option<CircuitBreakerMetrics>,
    inner: Mutex<Inner>,
}

/// A breaker for one upstream; clones share its state.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

/// Leave to make one call, from [`CircuitBreaker::try_acquire`]. Report its outcome with
/// [`record`](Self::record); a permit dropped unreported (the caller gave up) is no evidence
/// either way, so it only frees its probe slot.
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    generation: u64,
    probe: bool,
    started: Instant,
    reported: bool,
}

impl Permit {
    /// Whether this call is a half-open probe.
    #[must_use]
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Reports the call's outcome; its duration is measured from the permit's creation.
    pub fn record(mut self, failure: bool) {
        self.reported = true;
        let slow = self.started.elapsed() >= self.breaker.shared.config.slow_call_duration_threshold;
        self.breaker
            .on_outcome(self.generation, Outcome { failure, slow });
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            let mut inner = self.breaker.lock();
            if inner.generation == self.generation
                && let State::HalfOpen { admitted, .. } = &mut inner.state
            {
                *admitted -= 1;
            }
        }
    }
}

impl CircuitBreaker {
    /// # Errors
    /// An invalid [`CircuitBreakerConfig`].
    pub fn new(
        name: &str,
        config: CircuitBreakerConfig,
        metrics: Option<CircuitBreakerMetrics>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if let Some(metrics) = &metrics {
            metrics.set_state(name, CircuitState::Closed);
        }
        let window = Window::new(config.sliding_window_size);
        Ok(Self {
            shared: Arc::new(Shared {
                name: name.into(),
                config,
                metrics,
                inner: Mutex::new(Inner {
                    state: State::Closed(window),
                    generation: 0,
                }),
            }),
        })
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current state. An open breaker whose wait is over reports `Open` until a call arrives,
    /// as resilience4j does without automatic transitions.
    #[must_use]
    pub fn state(&self) -> CircuitState {
        self.lock().state.name()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code panics while holding the lock, but a poisoned breaker must still work.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Leave to make one call, or the rejection of an open breaker.
    ///
    /// # Errors
    /// [`ResilienceError::CircuitOpen`] while open, or while half-open with every probe in flight.
    pub fn try_acquire<E>(&self) -> Result<Permit, ResilienceError<E>> {
        let config = &self.shared.config;
        let now = Instant::now();
        let mut inner = self.lock();
        if let State::Open { until } = inner.state {
            if now < until {
                return Err(self.rejection(until - now));
            }
            let probes = Window::new(config.permitted_calls_in_half_open);
            self.transition(&mut inner, State::HalfOpen { admitted: 0, probes });
        }
        let probe = match &mut inner.state {
            State::Closed(_) => false,
            State::HalfOpen { admitted, .. } if *admitted < config.permitted_calls_in_half_open => {
                *admitted += 1;
                true
            }
            // Probes in flight end within their timeout, so that is when to come back.
            _ => return Err(self.rejection(config.probe_timeout)),
        };
        Ok(Permit {
            breaker: self.clone(),
            generation: inner.generation,
            probe,
            started: now,
            reported: false,
        })
    }

    fn rejection<E>(&self, retry_after: Duration) -> ResilienceError<E> {
        ResilienceError::CircuitOpen {
            name: self.shared.name.clone(),
            retry_after,
        }
    }

    fn on_outcome(&self, generation: u64, outcome: Outcome) {
        let config = &self.shared.config;
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let next = match &mut inner.state {
            State::Closed(window) => {
                window.push(outcome);
                (window.len() >= config.minimum_number_of_calls && window.exceeds(config))
                    .then(|| self.open_state())
            }
            State::HalfOpen { probes, .. } => {
                probes.push(outcome);
                (probes.len() >= config.permitted_calls_in_half_open).then(|| {
                    if probes.exceeds(config) {
                        self.open_state()
                    } else {
                        State::Closed(Window::new(config.sliding_window_size))
                    }
                })
            }
            State::Open { .. } => None,
        };
        if let Some(next) = next {
            self.transition(&mut inner, next);
        }
    }

    fn open_state(&self) -> State {
        State::Open {
            until: Instant::now() + self.shared.config.wait_duration_in_open,
        }
    }

    fn transition(&self, inner: &mut Inner, next: State) {
        let from = inner.state.name();
        let to = next.name();
        inner.state = next;
        inner.generation += 1;
        if let Some(metrics) = &self.shared.metrics {
            metrics.transition(&self.shared.name, to);
        }
        tracing::warn!(
            breaker = %self.shared.name,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker state changed"
        );
    }
}

/// Adds a [`CircuitBreakerService`]; `classifier` returns `true` for outcomes that count as
/// failures (see [`crate::classify`]).
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl<C> CircuitBreakerLayer<C> {
    #[must_use]
    pub fn new(breaker: CircuitBreaker, classifier: C) -> Self {
        Self { breaker, classifier }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(inner, self.clone())
    }
}

/// See the [module docs](self).
pub type CircuitBreakerService<S, C> = Layered<S, CircuitBreakerLayer<C>>;

impl<S, C, Req, Res, E> Policy<S, Req, Res, E> for CircuitBreakerLayer<C>
where
    S: Below<Req, Res, E>,
    C: Fn(&Result<Res, ResilienceError<E>>) -> bool + Clone + Send + 'static,
    Res: Send + 'static,
    E: Send + 'static,
{
    const WAITS_PER_CALL: bool = false;

    fn call(&self, inner: &mut S, req: Req) -> Call<Res, E> {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(rejected) => return future::ready(Err(rejected)).boxed(),
        };
        let probe_timeout = permit
            .is_probe()
            .then_some(self.breaker.shared.config.probe_timeout);
        let fut = inner.call(req);
        let classifier = self.classifier.clone();
        async move {
            let (result, failure) = match probe_timeout {
                Some(limit) => match tokio::time::timeout(limit, fut).await {
                    Ok(result) => {
                        let failure = classifier(&result);
                        (result, failure)
                    }
                    Err(_) => (Err(ResilienceError::TimedOut(limit)), true),
                },
                None => {
                    let result = fut.await;
                    let failure = classifier(&result);
                    (result, failure)
                }
            };
            permit.record(failure);
            result
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::refused_key;

    fn ok(failure: bool) -> Outcome {
        Outcome { failure, slow: false }
    }

    #[test]
    fn window_forgets_the_oldest_outcome() {
        let mut window = Window::new(2);
        window.push(ok(true));
        window.push(ok(false));
        window.push(ok(false));
        assert_eq!((window.len(), window.failures), (2, 0));
    }

    #[test]
    fn invalid_settings_name_their_key() {
        let refused =
            |change: fn(&mut CircuitBreakerConfig)| refused_key(CircuitBreakerConfig::validate, change);
        assert_eq!(
            refused(|c| c.minimum_number_of_calls = 60),
            "minimum_number_of_calls"
        );
        assert_eq!(
            refused(|c| c.failure_rate_threshold = 1.5),
            "failure_rate_threshold"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_abandoned_by_its_caller_frees_its_slot() {
        let config = CircuitBreakerConfig {
            minimum_number_of_calls: 1,
            permitted_calls_in_half_open: 1,
            ..CircuitBreakerConfig::default()
        };
        let breaker = CircuitBreaker::new("t", config, None).unwrap();
        breaker.try_acquire::<()>().unwrap().record(true);
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = breaker.try_acquire::<()>().unwrap();
        assert!(breaker.try_acquire::<()>().is_err());
        drop(probe);
        assert!(breaker.try_acquire::<()>().unwrap().is_probe());
    }
}
