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
        let own = Deadline::at(Instant::now() + self.timeout);
        let (effective, by_caller) = match req.deadline() {
            Some(caller) if caller < own => (caller, true),
            _ => (own, false),
        };
        if by_caller && effective.is_expired() {
            return future::ready(Err(ResilienceError::DeadlineExceeded)).boxed();
        }
        req.set_deadline(effective);
        let fut = effective.sync_scope(|| inner.call(req));
        let timeout = self.timeout;
        async move {
            match tokio::time::timeout_at(effective.instant(), effective.scope(fut)).await {
                Ok(result) => result,
                Err(_) if by_caller => Err(ResilienceError::DeadlineExceeded),
                Err(_) => Err(ResilienceError::TimedOut(timeout)),
            }
        }
        .boxed()
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
}
