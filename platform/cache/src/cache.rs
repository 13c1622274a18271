//! The cache itself: L1 in process, L2 through [`crate::l2`], and the read path between them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::generation::{Generations, Stamp};
use crate::l2::{L2, L2Error};
use crate::metrics::{CacheMetrics, ErrorKind, Level, Lookup};

/// How often one lookup goes round when invalidations keep outdating what it found; after that
/// it answers from the source without caching.
const ATTEMPTS: usize = 3;

/// After a Redis failure, reads and writes skip L2 this long instead of each waiting out a
/// timeout. Invalidations never skip it.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// At most one warning per cache this often while Redis keeps failing; the counter has them all.
const REDIS_WARN_EVERY: Duration = Duration::from_secs(30);

/// What a cache can hold: cloned out of L1, JSON in L2.
pub trait CacheValue: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}

impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> CacheValue for T {}

/// A cache that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {cache}: invalid cache.redis_url: {message}")]
    RedisUrl { cache: String, message: String },
}

/// A named cache-aside cache keyed by `String`; clones share it.
pub struct Cache<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V> std::fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("enabled", &self.inner.enabled)
            .field("l2", &self.inner.l2.is_some())
            .finish_non_exhaustive()
    }
}

struct Inner<V> {
    name: String,
    enabled: bool,
    ttl: Duration,
    l1: moka::future::Cache<String, Entry<V>>,
    l2: Option<L2>,
    generations: Generations,
    metrics: CacheMetrics,
    redis_skip_until: Mutex<Option<Instant>>,
    redis_warned_at: Mutex<Option<Instant>>,
}

#[derive(Clone)]
struct Entry<V> {
    value: V,
    /// The key's stamp when the load that produced this entry started.
    stamp: Stamp,
    /// Checked on every read on tokio's clock; moka's own TTL only frees the memory.
    expires_at: Instant,
}

/// Why a fill put nothing in L1.
enum Failure<V, E> {
    /// The source has no such key: not cached, so a key created later is found at once.
    Absent,
    /// The key was invalidated while it loaded; `value` may predate the change.
    Stale {
        value: V,
        stamp: Stamp,
    },
    Failed(Arc<E>),
}

impl<V: CacheValue> Cache<V> {
    /// A cache named `name` (in metrics, logs and Redis keys). Redis, when configured, is
    /// connected on first use.
    ///
    /// # Errors
    /// [`CacheError::RedisUrl`] when the Redis URL cannot be parsed.
    pub fn new(name: &str, config: &CacheConfig, metrics: &CacheMetrics) -> Result<Self, CacheError> {
        let ttl = Duration::from_millis(config.ttl_ms.max(1));
        let l2 = if config.enabled && config.has_l2() {
            Some(
                L2::new(
                    &config.redis_url,
                    format!("{}{name}:", config.key_prefix),
                    Duration::from_millis(config.redis_timeout_ms.max(1)),
                    ttl,
                )
                .map_err(|e| CacheError::RedisUrl {
                    cache: name.to_owned(),
                    message: e.to_string(),
                })?,
            )
        } else {
            None
        };
        let l1 = moka::future::Cache::builder()
            .name(name)
            .max_capacity(config.l1_max_entries.max(1))
            .time_to_live(ttl)
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                enabled: config.enabled,
                ttl,
                l1,
                l2,
                generations: Generations::new(),
                metrics: metrics.clone(),
                redis_skip_until: Mutex::new(None),
                redis_warned_at: Mutex::new(None),
            }),
        })
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The value of `key` from L1, else L2, else `loader` (whose result fills both levels).
    /// `Ok(None)` when the loader found nothing, which is not cached. Callers asking for a key
    /// while it loads wait for that one load. A load that started before an invalidation of
    /// its key returns its value to the callers that were already waiting, but never fills the
    /// cache, and a caller that arrived after the invalidation does not take it.
    ///
    /// # Errors
    /// The loader's error (shared by every caller that waited for that load); nothing is cached.
    pub async fn get_or_load<E, F, Fut>(&self, key: &str, loader: F) -> Result<Option<V>, Arc<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
        E: Send + Sync + 'static,
    {
        let inner = &*self.inner;
        if !inner.enabled {
            return loader().await.map_err(Arc::new);
        }
        let asked = inner.generations.stamp(key);
        for _ in 0..ATTEMPTS {
            if let Some(entry) = inner.l1.get(key).await {
                if inner.usable(key, &entry) {
                    inner.metrics.request(&inner.name, Level::l1, Lookup::hit);
                    return Ok(Some(entry.value));
                }
                inner.l1.invalidate(key).await;
            }
            inner.metrics.request(&inner.name, Level::l1, Lookup::miss);
            match inner
                .l1
                .try_get_with(key.to_owned(), inner.fill(key, &loader))
                .await
            {
                Ok(entry) => {
                    if inner.usable(key, &entry) {
                        return Ok(Some(entry.value));
                    }
                    // Filled, then outdated before this caller read it (or expired).
                    inner.l1.invalidate(key).await;
                    if entry.expires_at > Instant::now() && entry.stamp.not_before(asked) {
                        return Ok(Some(entry.value));
                    }
                }
                Err(failure) => match &*failure {
                    Failure::Absent => return Ok(None),
                    Failure::Failed(e) => return Err(Arc::clone(e)),
                    Failure::Stale { value, stamp } if stamp.not_before(asked) => {
                        return Ok(Some(value.clone()));
                    }
                    Failure::Stale { .. } => {}
                },
            }
        }
        inner.metrics.load(&inner.name);
        loader().await.map_err(Arc::new)
    }

    /// Drops `key` from L1 and L2; loads of it already under way will not fill either.
    pub async fn invalidate(&self, key: &str) {
        let inner = &*self.inner;
        if !inner.enabled {
            return;
        }
        // The generation moves first: an entry a racing load inserts after the removal below
        // already carries an outdated stamp.
        inner.generations.invalidate(key);
        inner.l1.invalidate(key).await;
        inner.metrics.invalidation(&inner.name);
        if let Some(l2) = &inner.l2
            && let Err(error) = l2.invalidate(key).await
        {
            inner.redis_failed(&error, "invalidate");
        }
    }

    /// Drops every L1 entry (after events may have been missed). L2 is left to the other
    /// instances' invalidations and its TTL.
    pub fn clear(&self) {
        let inner = &*self.inner;
        if !inner.enabled {
            return;
        }
        inner.generations.clear();
        inner.l1.invalidate_all();
        inner.metrics.clear(&inner.name);
    }
}

impl<V: CacheValue> Inner<V> {
    fn usable(&self, key: &str, entry: &Entry<V>) -> bool {
        entry.expires_at > Instant::now() && entry.stamp == self.generations.stamp(key)
    }

    /// L2, else the loader; runs once per key at a time (inside moka's `try_get_with`).
    async fn fill<E, F, Fut>(&self, key: &str, loader: &F) -> Result<Entry<V>, Failure<V, E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        let stamp = self.generations.stamp(key);
        let mut version = None;
        if let Some(l2) = self.l2_due() {
            match l2.get(key).await {
                Ok(found) => {
                    if let Some((json, ttl_ms)) = found.value {
                        match serde_json::from_str::<V>(&json) {
                            Ok(value) => {
                                self.metrics.request(&self.name, Level::l2, Lookup::hit);
                                return self.settle(key, value, stamp, Duration::from_millis(ttl_ms));
                            }
                            // A value of an older shape: load it again and overwrite it.
                            Err(error) => {
                                tracing::warn!(cache = %self.name, key, %error, "unreadable L2 value");
                            }
                        }
                    }
                    self.metrics.request(&self.name, Level::l2, Lookup::miss);
                    version = Some(found.version);
                }
                Err(error) => self.redis_failed(&error, "read"),
            }
        }
        self.metrics.load(&self.name);
        let value = match loader().await {
            Ok(Some(value)) => value,
            Ok(None) => return Err(Failure::Absent),
            Err(error) => {
                self.metrics.error(&self.name, ErrorKind::load);
                return Err(Failure::Failed(Arc::new(error)));
            }
        };
        if let (Some(l2), Some(version)) = (&self.l2, version)
            && self.generations.stamp(key) == stamp
        {
            match serde_json::to_string(&value) {
                Ok(json) => {
                    if let Err(error) = l2.put(key, &json, &version).await {
                        self.redis_failed(&error, "write");
                    }
                }
                Err(error) => tracing::warn!(cache = %self.name, key, %error, "value not cached in L2"),
            }
        }
        self.settle(key, value, stamp, self.ttl)
    }

    fn settle<E>(&self, key: &str, value: V, stamp: Stamp, ttl: Duration) -> Result<Entry<V>, Failure<V, E>> {
        if self.generations.stamp(key) != stamp {
            return Err(Failure::Stale { value, stamp });
        }
        Ok(Entry {
            value,
            stamp,
            expires_at: Instant::now() + ttl,
        })
    }

    fn l2_due(&self) -> Option<&L2> {
        let l2 = self.l2.as_ref()?;
        let skip_until = *self
            .redis_skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match skip_until {
            Some(until) if Instant::now() < until => None,
            _ => Some(l2),
        }
    }

    fn redis_failed(&self, error: &L2Error, operation: &'static str) {
        self.metrics.error(&self.name, ErrorKind::redis);
        let now = Instant::now();
        *self
            .redis_skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now + REDIS_BACKOFF);
        let mut warned = self
            .redis_warned_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if warned.is_none_or(|at| now.duration_since(at) >= REDIS_WARN_EVERY) {
            *warned = Some(now);
            tracing::warn!(cache = %self.name, operation, %error, "L2 (Redis) failed; using the source");
        }
    }
}

#[cfg(test)]
mod tests;
