use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::*;

fn config(ttl_ms: u64) -> CacheConfig {
    CacheConfig {
        ttl_ms,
        ..CacheConfig::default()
    }
}

fn cache(ttl_ms: u64) -> (Cache<String>, CacheMetrics) {
    let metrics = CacheMetrics::default();
    (Cache::new("prices", &config(ttl_ms), &metrics).unwrap(), metrics)
}

/// A source whose answers are numbered by call: `v1`, `v2`, …; `gate`, when set, holds each
/// call until a permit is added.
#[derive(Clone, Default)]
struct Source {
    calls: Arc<AtomicUsize>,
    gate: Option<Arc<Semaphore>>,
}

impl Source {
    fn gated() -> Self {
        Self {
            calls: Arc::default(),
            gate: Some(Arc::new(Semaphore::new(0))),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn release(&self, n: usize) {
        self.gate.as_ref().unwrap().add_permits(n);
    }

    async fn load(&self) -> Result<Option<String>, std::io::Error> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        Ok(Some(format!("v{n}")))
    }
}

/// [`get`] in a task of its own.
fn spawn_get(cache: &Cache<String>, source: &Source) -> tokio::task::JoinHandle<String> {
    let (cache, source) = (cache.clone(), source.clone());
    tokio::spawn(async move { get(&cache, &source).await })
}

async fn get(cache: &Cache<String>, source: &Source) -> String {
    cache
        .get_or_load("MUG-001", || source.load())
        .await
        .unwrap()
        .unwrap()
}

/// Lets spawned lookups run until they wait on the source.
async fn until_calls(source: &Source, n: usize) {
    while source.calls() < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_lookup_is_an_l1_hit_without_a_load() {
    let (cache, metrics) = cache(60_000);
    let source = Source::default();

    assert_eq!(get(&cache, &source).await, "v1");
    assert_eq!(get(&cache, &source).await, "v1");

    assert_eq!(source.calls(), 1);
    assert_eq!(metrics.requests("prices", "l1", "hit"), 1);
    assert_eq!(metrics.requests("prices", "l1", "miss"), 1);
    assert_eq!(metrics.loads("prices"), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_lookups_of_one_key_share_one_load() {
    let (cache, _) = cache(60_000);
    let source = Source::gated();
    let lookups: Vec<_> = (0..20).map(|_| spawn_get(&cache, &source)).collect();
    until_calls(&source, 1).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    source.release(1);

    for lookup in lookups {
        assert_eq!(lookup.await.unwrap(), "v1");
    }
    assert_eq!(source.calls(), 1);
}

/// A cache whose key is invalidated while the first lookup's load is held at the source; the
/// source and that lookup.
async fn invalidated_during_a_load() -> (Cache<String>, Source, tokio::task::JoinHandle<String>) {
    let (cache, _) = cache(60_000);
    let source = Source::gated();
    let early = spawn_get(&cache, &source);
    until_calls(&source, 1).await;
    cache.invalidate("MUG-001").await;
    (cache, source, early)
}

#[tokio::test(start_paused = true)]
async fn a_load_that_started_before_an_invalidation_never_fills_the_cache() {
    let (cache, source, early) = invalidated_during_a_load().await;
    source.release(1);

    // The caller that was already waiting gets what its load read; the cache keeps nothing.
    assert_eq!(early.await.unwrap(), "v1");
    source.release(1);
    assert_eq!(get(&cache, &source).await, "v2");
    assert_eq!(get(&cache, &source).await, "v2");
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_caller_arriving_after_an_invalidation_does_not_take_the_racing_load() {
    let (cache, source, early) = invalidated_during_a_load().await;
    let late = spawn_get(&cache, &source);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }

    source.release(2);

    assert_eq!(early.await.unwrap(), "v1");
    assert_eq!(late.await.unwrap(), "v2");
}

#[tokio::test(start_paused = true)]
async fn an_entry_is_loaded_again_after_the_ttl() {
    let (cache, _) = cache(1_000);
    let source = Source::default();
    assert_eq!(get(&cache, &source).await, "v1");

    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(get(&cache, &source).await, "v1");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(get(&cache, &source).await, "v2");
}

#[tokio::test(start_paused = true)]
async fn absent_keys_and_failed_loads_are_not_cached() {
    let (cache, metrics) = cache(60_000);
    let calls = AtomicUsize::new(0);
    let absent = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<Option<String>, std::io::Error>(None)
    };
    assert_eq!(cache.get_or_load("NOPE", absent).await.unwrap(), None);
    assert_eq!(cache.get_or_load("NOPE", absent).await.unwrap(), None);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let failing = || async { Err::<Option<String>, _>(std::io::Error::other("inventory is down")) };
    let error = cache.get_or_load("MUG-001", failing).await.unwrap_err();
    assert_eq!(error.to_string(), "inventory is down");
    let source = Source::default();
    assert_eq!(get(&cache, &source).await, "v1");
    assert_eq!(metrics.loads("prices"), 4);
}

#[tokio::test(start_paused = true)]
async fn clear_drops_every_entry_and_outdates_loads_in_flight() {
    let (cache, _) = cache(60_000);
    let source = Source::default();
    assert_eq!(get(&cache, &source).await, "v1");
    let other = cache
        .get_or_load("TEE-BLK-M", || async {
            Ok::<_, std::io::Error>(Some("t1".to_owned()))
        })
        .await
        .unwrap();
    assert_eq!(other.as_deref(), Some("t1"));

    cache.clear();

    assert_eq!(get(&cache, &source).await, "v2");
    let other = cache
        .get_or_load("TEE-BLK-M", || async {
            Ok::<_, std::io::Error>(Some("t2".to_owned()))
        })
        .await
        .unwrap();
    assert_eq!(other.as_deref(), Some("t2"));
}

#[tokio::test(start_paused = true)]
async fn a_disabled_cache_asks_the_source_every_time() {
    let metrics = CacheMetrics::default();
    let disabled = CacheConfig {
        enabled: false,
        ..CacheConfig::default()
    };
    let cache: Cache<String> = Cache::new("prices", &disabled, &metrics).unwrap();
    let source = Source::default();
    assert_eq!(get(&cache, &source).await, "v1");
    assert_eq!(get(&cache, &source).await, "v2");
    assert_eq!(metrics.requests("prices", "l1", "hit"), 0);
}
