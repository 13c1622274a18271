//! L2: Redis shared by instances. Every test uses key prefixes of its own (emptied when it ends), so they run in
//! parallel on one Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mercato_cache::{Cache, CacheConfig, CacheMetrics};
use mercato_testkit::redis::KeyPrefix;
use tokio::sync::Semaphore;

fn config(prefix: &KeyPrefix) -> CacheConfig {
    CacheConfig {
        ttl_ms: 60_000,
        redis_url: prefix.url().to_owned(),
        key_prefix: prefix.as_str().to_owned(),
        redis_timeout_ms: 1_000,
        ..CacheConfig::default()
    }
}

/// An instance's cache with a source that answers `"<tag><n>"` on its n-th call.
struct Instance {
    cache: Cache<String>,
    metrics: CacheMetrics,
    tag: &'static str,
    loads: Arc<AtomicUsize>,
}

impl Instance {
    fn new(config: &CacheConfig, tag: &'static str) -> Self {
        let metrics = CacheMetrics::default();
        Self {
            cache: Cache::new("prices", config, &metrics).unwrap(),
            metrics,
            tag,
            loads: Arc::default(),
        }
    }

    async fn get(&self, key: &str) -> String {
        self.cache
            .get_or_load(key, || async {
                let n = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
                Ok::<_, std::io::Error>(Some(format!("{}{n}", self.tag)))
            })
            .await
            .unwrap()
            .unwrap()
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_value_one_instance_loaded_is_an_l2_hit_on_another() {
    let prefix = KeyPrefix::new();
    let config = config(&prefix);
    let a = Instance::new(&config, "a");
    let b = Instance::new(&config, "b");

    assert_eq!(a.get("MUG-001").await, "a1");
    assert_eq!(b.get("MUG-001").await, "a1");

    assert_eq!(b.loads(), 0);
    assert_eq!(b.metrics.requests("prices", "l2", "hit"), 1);
    assert_eq!(a.metrics.requests("prices", "l2", "miss"), 1);
}

#[tokio::test]
async fn values_live_in_redis_as_json_with_the_ttl() {
    let prefix = KeyPrefix::new();
    let config = config(&prefix);
    let a = Instance::new(&config, "a");
    a.get("MUG-001").await;

    let mut c = raw(&config.redis_url).await;
    let key = format!("{}prices:v:MUG-001", prefix.as_str());
    let (json, ttl): (String, i64) = redis::pipe()
        .get(&key)
        .pttl(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(json, "\"a1\"");
    assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl}");
}

#[tokio::test]
async fn an_invalidation_removes_the_shared_value() {
    let prefix = KeyPrefix::new();
    let config = config(&prefix);
    let a = Instance::new(&config, "a");
    assert_eq!(a.get("MUG-001").await, "a1");

    a.cache.invalidate("MUG-001").await;

    let b = Instance::new(&config, "b");
    assert_eq!(b.get("MUG-001").await, "b1");
    assert_eq!(a.get("MUG-001").await, "b1");
}

#[tokio::test]
async fn a_load_that_raced_an_invalidation_elsewhere_never_fills_redis() {
    let prefix = KeyPrefix::new();
    let config = config(&prefix);
    let gate = Arc::new(Semaphore::new(0));
    let slow = Instance::new(&config, "slow");
    let other = Instance::new(&config, "other");
    let loading = {
        let (cache, gate) = (slow.cache.clone(), Arc::clone(&gate));
        tokio::spawn(async move {
            cache
                .get_or_load("MUG-001", || async {
                    gate.acquire().await.unwrap().forget();
                    Ok::<_, std::io::Error>(Some("before the change".to_owned()))
                })
                .await
                .unwrap()
        })
    };
    // The slow load has read the key's version once its L2 miss is counted.
    mercato_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the slow load to start",
        || async { (slow.metrics.requests("prices", "l2", "miss") == 1).then_some(()) },
    )
    .await;

    other.cache.invalidate("MUG-001").await;
    gate.add_permits(1);
    assert_eq!(loading.await.unwrap().as_deref(), Some("before the change"));

    let fresh = Instance::new(&config, "fresh");
    assert_eq!(fresh.get("MUG-001").await, "fresh1");
}

#[tokio::test]
async fn without_redis_lookups_go_to_the_source_and_count_the_errors() {
    // Nothing listens on port 1.
    let config = CacheConfig {
        redis_url: "redis://127.0.0.1:1".into(),
        redis_timeout_ms: 200,
        key_prefix: "unused:".into(),
        ..CacheConfig::default()
    };
    let a = Instance::new(&config, "a");

    assert_eq!(a.get("MUG-001").await, "a1");
    assert_eq!(a.get("MUG-001").await, "a1");
    a.cache.invalidate("MUG-001").await;
    assert_eq!(a.get("MUG-001").await, "a2");

    assert!(a.metrics.redis_errors("prices") >= 2);
}
