//! A per-call timeout that also honours the caller's deadline.
//!
//! The effective limit is `min(own timeout, time left before the deadline)`. A call whose deadline
//! has already passed is not sent at all; one that is sent carries the effective deadline onward
//! (for HTTP, in `x-request-deadline-ms`), so no downstream waits longer than we will.

use std::time::Duration;

use futures_util::future::{self, FutureExt};
use tokio::time::Instant;
use tower::Layer;

use crate::deadline::{Deadline, DeadlineCarrier};
use crate::error::ResilienceError;
use crate::layered::{Below, Call, Layered, Policy};

/// Adds [`Timeout`] to a service.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(inner, *self)
    }
}

/// See the [module docs](self).
pub type Timeout<S> = Layered<S, TimeoutLayer>;

impl<S, Req, Res, E> Policy<S, Req, Res, E> for TimeoutLayer
where
    S: Below<Req, Res, E>,
    Req: DeadlineCarrier,
    Res: Send + 'static,
    E: Send + 'static,
{
    const WAITS_PER_CALL: bool = false;

    fn call(&self, inner: &mut S, mut req: Req) -> Call<Res, E> {
        let Some(bound) = self.bind(&mut req) else {
            return future::ready(Err(ResilienceError::DeadlineExceeded)).boxed();
        };
        let fut = bound.effective.sync_scope(|| inner.call(req));
        bound.wait(fut).boxed()
    }
}

impl TimeoutLayer {
    /// Sends `req` through `send` within this layer's limit: what [`Timeout`] does, for a caller
    /// that sends without a service per call, and so without a boxed future.
    ///
    /// # Errors
    /// [`ResilienceError::DeadlineExceeded`] when the caller's deadline passed first (or had
    /// passed already: then `send` is not called), [`ResilienceError::TimedOut`] when the own
    /// timeout did, and `send`'s own errors.
    pub async fn run<Req, Res, E, F, Fut>(self, mut req: Req, send: F) -> Result<Res, ResilienceError<E>>
    where
        Req: DeadlineCarrier,
        F: FnOnce(Req) -> Fut,
        Fut: Future<Output = Result<Res, ResilienceError<E>>>,
    {
        let Some(bound) = self.bind(&mut req) else {
            return Err(ResilienceError::DeadlineExceeded);
        };
        let fut = bound.effective.sync_scope(|| send(req));
        bound.wait(fut).await
    }

    /// The limit of one call, `None` when the caller's deadline has passed; records it on `req`.
    fn bind<Req: DeadlineCarrier>(self, req: &mut Req) -> Option<Bound> {
        let own = Deadline::at(Instant::now() + self.timeout);
        let (effective, by_caller) = match req.deadline() {
            Some(caller) if caller < own => (caller, true),
            _ => (own, false),
        };
        if by_caller && effective.is_expired() {
            return None;
        }
        req.set_deadline(effective);
        Some(Bound {
            effective,
            by_caller,
            timeout: self.timeout,
        })
    }
}

/// One call's limit: the earlier of the layer's timeout and the caller's deadline.
#[derive(Debug, Clone, Copy)]
struct Bound {
    effective: Deadline,
    by_caller: bool,
    timeout: Duration,
}

impl Bound {
    async fn wait<Res, E>(
        self,
        fut: impl Future<Output = Result<Res, ResilienceError<E>>>,
    ) -> Result<Res, ResilienceError<E>> {
        match tokio::time::timeout_at(self.effective.instant(), self.effective.scope(fut)).await {
            Ok(result) => result,
            Err(_) if self.by_caller => Err(ResilienceError::DeadlineExceeded),
            Err(_) => Err(ResilienceError::TimedOut(self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{ServiceExt, service_fn};

    #[tokio::test(start_paused = true)]
    async fn own_timeout_cuts_a_slow_call_when_no_deadline_is_set() {
        let slow = service_fn(|_: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, ResilienceError<()>>(())
        });
        let started = Instant::now();
        let result = TimeoutLayer::new(Duration::from_secs(1))
            .layer(slow)
            .oneshot(http::Request::new(()))
            .await;
        assert!(matches!(result, Err(ResilienceError::TimedOut(_))));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_callee_sees_the_effective_deadline_in_header_and_task_local() {
        let echo = service_fn(|req: http::Request<()>| async move {
            Ok::<_, ResilienceError<()>>((
                req.headers()[crate::deadline::HEADER].clone(),
                Deadline::current().map(Deadline::remaining),
            ))
        });
        let (header, current) = TimeoutLayer::new(Duration::from_millis(300))
            .layer(echo)
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(header, "300");
        assert_eq!(current, Some(Duration::from_millis(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn run_in_place_is_bound_like_the_service() {
        let slow = |req: http::Request<()>| async move {
            assert_eq!(req.headers()[crate::deadline::HEADER], "1000");
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, ResilienceError<()>>(())
        };
        let started = Instant::now();
        let result = TimeoutLayer::new(Duration::from_secs(1))
            .run(http::Request::new(()), slow)
            .await;
        assert!(matches!(result, Err(ResilienceError::TimedOut(_))));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn run_in_place_does_not_send_past_the_callers_deadline() {
        let passed = Deadline::after(Duration::from_millis(5));
        tokio::time::advance(Duration::from_millis(6)).await;
        let mut req = http::Request::new(());
        req.extensions_mut().insert(passed);
        let result = TimeoutLayer::new(Duration::from_secs(1))
            .run(req, |_| async { Ok::<_, ResilienceError<()>>("sent") })
            .await;
        assert!(matches!(result, Err(ResilienceError::DeadlineExceeded)));
    }
}
