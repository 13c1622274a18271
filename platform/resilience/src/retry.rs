//! Retries with full-jitter exponential backoff, under a retry budget.
//!
//! A call is retried only when the request is retryable (the caller's predicate, e.g.
//! [`crate::classify::idempotent_or_keyed`]) **and** the outcome is transient (the caller's
//! classifier), at most `max_attempts` times in all, never past the request's deadline, and only
//! while the budget allows: every request deposits, every retry withdraws, so retries stay near
//! `budget_ratio` of traffic plus `budget_min_per_sec` ([`TpsBudget`], Linkerd's design). When the
//! budget is spent the last outcome is returned: an answer as is, an error wrapped in
//! [`ResilienceError::BudgetExhausted`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::FutureExt;
use rand::Rng;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, ServiceExt};

use crate::deadline::{Deadline, DeadlineCarrier};
use crate::error::{ConfigError, ResilienceError, check};
use crate::layered::{Below, Call, Layered, Policy};

/// A request that can be sent again. `http::Request` is not `Clone` (its extensions are not), so
/// retrying needs this instead; a request type that is `Clone` implements it as `Some(self.clone())`.
pub trait Replay: Sized {
    /// A copy to send as the next attempt, or `None` if this request cannot be repeated (a
    /// streaming body, say), in which case it is not retried.
    fn replay(&self) -> Option<Self>;
}

/// Copies method, URI, version, headers, body and the [`Deadline`]; other extensions are
/// per-attempt state and are left behind.
impl<B: Clone> Replay for http::Request<B> {
    fn replay(&self) -> Option<Self> {
        let mut copy = http::Request::new(self.body().clone());
        *copy.method_mut() = self.method().clone();
        *copy.uri_mut() = self.uri().clone();
        *copy.version_mut() = self.version();
        *copy.headers_mut() = self.headers().clone();
        if let Some(deadline) = self.extensions().get::<Deadline>() {
            copy.extensions_mut().insert(*deadline);
        }
        Some(copy)
    }
}

/// Full-jitter exponential backoff: the wait before retry `n` (from 0) is uniform in
/// `[0, min(cap, base * 2^n)]`, which spreads synchronized clients apart (AWS's "full jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The longest wait before retry `retry` (0 for the first retry).
    #[must_use]
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random wait before retry `retry`, within [`ceiling`](Self::ceiling).
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.gen_range(0..=ceiling))
    }
}

/// Retry settings; defaults are Linkerd's budget (20 % plus 10 per second over 10 s).
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Retries allowed per request, as a share (0.2 = one retry per five requests).
    pub budget_ratio: f32,
    /// Retries allowed per second regardless of traffic, so a quiet client can still retry.
    pub budget_min_per_sec: u32,
    /// How long a deposit counts; between 1 and 60 seconds.
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff {
                base: Duration::from_millis(25),
                cap: Duration::from_secs(1),
            },
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// # Errors
    /// A setting [`TpsBudget`] would panic on, no attempts, or a cap below the base.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(self.max_attempts > 0, "max_attempts", "must be at least 1")?;
        check(
            self.backoff.cap >= self.backoff.base,
            "backoff.cap",
            "must be at least backoff.base",
        )?;
        check(
            (0.0..=1000.0).contains(&self.budget_ratio),
            "budget_ratio",
            "must be between 0 and 1000",
        )?;
        check(
            self.budget_min_per_sec < i32::MAX.unsigned_abs(),
            "budget_min_per_sec",
            "is too large",
        )?;
        check(
            (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.budget_window),
            "budget_window",
            "must be between 1 s and 60 s",
        )
    }
}

/// Adds [`Retry`]. `retryable` judges the request, `transient` the outcome; clones of the layer and
/// every service built from it share one budget.
#[derive(Clone)]
pub struct RetryLayer<P, C> {
    max_attempts: u32,
    backoff: Backoff,
    budget: Arc<TpsBudget>,
    retryable: P,
    transient: C,
}

impl<P, C> std::fmt::Debug for RetryLayer<P, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<P, C> RetryLayer<P, C> {
    /// # Errors
    /// An invalid [`RetryConfig`].
    pub fn new(config: &RetryConfig, retryable: P, transient: C) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            budget: Arc::new(TpsBudget::new(
                config.budget_window,
                config.budget_min_per_sec,
                config.budget_ratio,
            )),
            retryable,
            transient,
        })
    }
}

impl<S, P: Clone, C: Clone> Layer<S> for RetryLayer<P, C> {
    type Service = Retry<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(inner, self.clone())
    }
}

/// See the [module docs](self).
pub type Retry<S, P, C> = Layered<S, RetryLayer<P, C>>;

impl<S, P, C, Req, Res, E> Policy<S, Req, Res, E> for RetryLayer<P, C>
where
    S: Below<Req, Res, E> + Clone + Send + 'static,
    P: Fn(&Req) -> bool + Clone + Send + Sync + 'static,
    C: Fn(&Result<Res, ResilienceError<E>>) -> bool + Clone + Send + Sync + 'static,
    Req: DeadlineCarrier + Replay + Send + 'static,
    Res: Send + 'static,
    E: Send + 'static,
{
    const WAITS_PER_CALL: bool = true;

    fn call(&self, inner: &mut S, req: Req) -> Call<Res, E> {
        let svc = inner.clone();
        let layer = self.clone();
        async move { layer.run(req, move |attempt| svc.clone().oneshot(attempt)).await }.boxed()
    }
}

impl<P, C> RetryLayer<P, C> {
    /// Sends `req` through `send`, and replays of it as long as this layer's rules allow; what
    /// [`Retry`] does, for a caller that sends without a service per attempt. Nothing is copied
    /// for a request that is not retryable.
    ///
    /// # Errors
    /// The last attempt's error; [`ResilienceError::BudgetExhausted`] around it when the budget
    /// stopped a retry.
    pub async fn run<Req, Res, E, F, Fut>(&self, req: Req, mut send: F) -> Result<Res, ResilienceError<E>>
    where
        P: Fn(&Req) -> bool,
        C: Fn(&Result<Res, ResilienceError<E>>) -> bool,
        Req: DeadlineCarrier + Replay,
        F: FnMut(Req) -> Fut,
        Fut: Future<Output = Result<Res, ResilienceError<E>>>,
    {
        self.budget.deposit();
        if !(self.retryable)(&req) {
            return send(req).await;
        }
        let mut attempts = 1;
        loop {
            let Some(attempt) = req.replay() else {
                return send(req).await;
            };
            let result = send(attempt).await;
            if attempts >= self.max_attempts || !(self.transient)(&result) {
                return result;
            }
            let delay = self.backoff.delay(attempts - 1, &mut rand::thread_rng());
            // A retry that cannot finish before the caller gives up only adds load.
            if req
                .deadline()
                .is_some_and(|d| Instant::now() + delay >= d.instant())
            {
                return result;
            }
            if !self.budget.withdraw() {
                tracing::debug!(attempts, "retry budget exhausted");
                return result.map_err(|last| ResilienceError::BudgetExhausted {
                    attempts,
                    last: Box::new(last),
                });
            }
            tokio::time::sleep(delay).await;
            attempts += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::refused_key;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn backoff_ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        };
        let ceilings: Vec<_> = (0..5).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [10, 20, 40, 50, 50]);
        assert_eq!(backoff.ceiling(200), Duration::from_millis(50));
    }

    #[test]
    fn jittered_delays_stay_within_the_ceiling_and_spread_out() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        };
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 0..6 {
            let delays: Vec<_> = (0..200).map(|_| backoff.delay(retry, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= backoff.ceiling(retry)));
            let distinct: std::collections::HashSet<_> = delays.iter().collect();
            assert!(distinct.len() > 150, "delays are jittered");
            // Full jitter: the mean sits near half the ceiling, so the waits grow with the retry.
            let mean = delays.iter().sum::<Duration>() / 200;
            let ceiling = backoff.ceiling(retry);
            assert!(mean > ceiling / 3 && mean < ceiling * 2 / 3, "{retry}: {mean:?}");
        }
    }

    #[test]
    fn a_budget_window_tps_budget_would_panic_on_is_refused() {
        let key = refused_key(RetryConfig::validate, |c| {
            c.budget_window = Duration::from_millis(500);
        });
        assert_eq!(key, "budget_window");
    }
}
