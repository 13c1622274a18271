//! A bulkhead: at most `max_concurrent` calls in flight, at most `max_queued` waiting, each waiting
//! at most `max_wait`. Anything beyond is rejected at once, so a slow dependency ties up a bounded
//! share of this process instead of all of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tower::{Layer, ServiceExt};

use crate::error::{ConfigError, ResilienceError, check};
use crate::layered::{Below, Call, Layered, Policy};

/// Bulkhead settings.
#[derive(Debug, Clone)]
pub struct BulkheadConfig {
    pub max_concurrent: usize,
    /// Calls allowed to wait for a permit; zero rejects as soon as all permits are taken.
    pub max_queued: usize,
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            max_queued: 64,
            max_wait: Duration::from_millis(100),
        }
    }
}

impl BulkheadConfig {
    /// # Errors
    /// A setting that would make the bulkhead reject everything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.max_concurrent > 0 && self.max_concurrent <= Semaphore::MAX_PERMITS,
            "max_concurrent",
            "must be at least 1",
        )
    }
}

#[derive(Debug)]
struct Shared {
    name: Arc<str>,
    permits: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
    max_wait: Duration,
}

/// Adds a [`Bulkhead`]; every service this layer builds (and every clone) shares one limit.
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

impl BulkheadLayer {
    /// # Errors
    /// An invalid [`BulkheadConfig`].
    pub fn new(name: &str, config: &BulkheadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared {
                name: name.into(),
                permits: Arc::new(Semaphore::new(config.max_concurrent)),
                queued: AtomicUsize::new(0),
                max_queued: config.max_queued,
                max_wait: config.max_wait,
            }),
        })
    }

    /// Permits free right now.
    #[must_use]
    pub fn available(&self) -> usize {
        self.shared.permits.available_permits()
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(inner, self.clone())
    }
}

/// See the [module docs](self).
pub type Bulkhead<S> = Layered<S, BulkheadLayer>;

/// Holds a place in the wait queue; gives it back however the wait ends, cancellation included.
struct QueueSlot(Arc<Shared>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    fn full<E>(&self) -> ResilienceError<E> {
        ResilienceError::BulkheadFull {
            name: self.name.clone(),
        }
    }
}

impl<S, Req, Res, E> Policy<S, Req, Res, E> for BulkheadLayer
where
    S: Below<Req, Res, E> + Clone + Send + 'static,
    Req: Send + 'static,
    Res: Send + 'static,
    E: Send + 'static,
{
    const WAITS_PER_CALL: bool = true;

    fn call(&self, inner: &mut S, req: Req) -> Call<Res, E> {
        let svc = inner.clone();
        let entry = self.shared.enter::<E>();
        async move {
            let _permit = entry?.await?;
            svc.oneshot(req).await
        }
        .boxed()
    }
}

/// A place taken at once, or one to wait for (bounded by `max_wait`).
enum Entry {
    Taken(OwnedSemaphorePermit),
    Queued(QueueSlot),
}

impl Entry {
    async fn wait<E>(self) -> Result<OwnedSemaphorePermit, ResilienceError<E>> {
        match self {
            Self::Taken(permit) => Ok(permit),
            Self::Queued(slot) => {
                let shared = &slot.0;
                let wait = shared.permits.clone().acquire_owned();
                match tokio::time::timeout(shared.max_wait, wait).await {
                    Ok(Ok(permit)) => Ok(permit),
                    _ => Err(shared.full()),
                }
            }
        }
    }
}

impl Shared {
    /// Takes a permit, or a place in the queue, or refuses at once when the queue is full.
    fn enter<E>(
        self: &Arc<Self>,
    ) -> Result<
        impl Future<Output = Result<OwnedSemaphorePermit, ResilienceError<E>>> + Send + use<E>,
        ResilienceError<E>,
    > {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Entry::Taken(permit).wait()),
            Err(TryAcquireError::NoPermits) => {
                if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    return Err(self.full());
                }
                Ok(Entry::Queued(QueueSlot(Arc::clone(self))).wait())
            }
            Err(TryAcquireError::Closed) => Err(self.full()),
        }
    }
}

impl BulkheadLayer {
    /// A permit to call, held until dropped: what [`Bulkhead`] takes around each call, for a
    /// caller that calls without a service.
    ///
    /// # Errors
    /// [`ResilienceError::BulkheadFull`] when the queue is full or the wait ran past `max_wait`.
    pub async fn acquire<E>(&self) -> Result<OwnedSemaphorePermit, ResilienceError<E>> {
        self.shared.enter()?.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::refused_key;

    #[test]
    fn zero_concurrency_is_rejected_with_the_key() {
        let key = refused_key(BulkheadConfig::validate, |c| c.max_concurrent = 0);
        assert_eq!(key, "max_concurrent");
    }
}
