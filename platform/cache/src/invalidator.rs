//! The task that turns change events into invalidations, on every instance.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mercato_messaging::{Broadcast, Bus, Envelope};
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, CacheValue};

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

type Pending<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A cache, whatever its value type.
trait Target: Send + Sync {
    fn name(&self) -> &str;
    fn invalidate<'a>(&'a self, key: &'a str) -> Pending<'a>;
    fn clear(&self);
}

impl<V: CacheValue> Target for Cache<V> {
    fn name(&self) -> &str {
        Cache::name(self)
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> Pending<'a> {
        Box::pin(Cache::invalidate(self, key))
    }

    fn clear(&self) {
        Cache::clear(self);
    }
}

/// Invalidates caches on the events of one bus category, read through a broadcast
/// subscription. The key of an event is its stream id (a product's sku, a customer's id).
pub struct Invalidator {
    category: String,
    routes: Vec<(String, Arc<dyn Target>)>,
}

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: Vec<_> = self.routes.iter().map(|(t, c)| (t.as_str(), c.name())).collect();
        f.debug_struct("Invalidator")
            .field("category", &self.category)
            .field("routes", &routes)
            .finish()
    }
}

impl Invalidator {
    #[must_use]
    pub fn new(category: &str) -> Self {
        Self {
            category: category.to_owned(),
            routes: Vec::new(),
        }
    }

    /// Each `event_type` event invalidates the entry of `cache` named by the event's stream id.
    #[must_use]
    pub fn on<V: CacheValue>(mut self, event_type: &str, cache: &Cache<V>) -> Self {
        self.routes.push((event_type.to_owned(), Arc::new(cache.clone())));
        self
    }

    /// Subscribes (again after failures, with backoff) and applies events until `shutdown`.
    /// Every (re)subscription and every gap clears L1: events published while nobody listened
    /// are not delivered later.
    pub async fn run(self, bus: Bus, shutdown: CancellationToken) {
        let mut pause = RETRY_FIRST;
        loop {
            let subscribed = tokio::select! {
                () = shutdown.cancelled() => return,
                subscribed = bus.subscribe(&self.category) => subscribed,
            };
            let mut subscription = match subscribed {
                Ok(subscription) => subscription,
                Err(error) => {
                    tracing::warn!(category = %self.category, %error, "cache invalidation cannot subscribe yet");
                    if !wait(&shutdown, &mut pause).await {
                        return;
                    }
                    continue;
                }
            };
            self.clear_all();
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = subscription.next() => next,
                };
                match next {
                    Ok(Broadcast::Event(envelope)) => {
                        pause = RETRY_FIRST;
                        self.apply(&envelope).await;
                    }
                    Ok(Broadcast::Gap) => {
                        tracing::info!(category = %self.category, "events may have been missed; clearing caches");
                        self.clear_all();
                    }
                    Err(error) => {
                        tracing::warn!(category = %self.category, %error, "cache invalidation subscription failed");
                        if !wait(&shutdown, &mut pause).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn apply(&self, envelope: &Envelope) {
        for (event_type, cache) in &self.routes {
            if *event_type == envelope.event_type {
                tracing::debug!(cache = cache.name(), key = %envelope.stream_id, "invalidated by {event_type}");
                cache.invalidate(&envelope.stream_id).await;
            }
        }
    }

    fn clear_all(&self) {
        for (_, cache) in &self.routes {
            cache.clear();
        }
    }
}

/// Sleeps `pause` (doubling it for next time) unless shut down first; false on shutdown.
async fn wait(shutdown: &CancellationToken, pause: &mut Duration) -> bool {
    let slept = tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(*pause) => true,
    };
    *pause = (*pause * 2).min(RETRY_MAX);
    slept
}
