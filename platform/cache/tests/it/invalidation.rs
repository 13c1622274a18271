//! An event on the bus invalidates the cache of every instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mercato_cache::{Cache, CacheConfig, CacheMetrics, Invalidator};
use mercato_messaging::{Bus, BusConfig, Context, Envelope, Event};
use mercato_testkit::eventually;
use mercato_testkit::nats::NatsServer;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use mercato_testkit::PATIENCE;

#[derive(Debug, Serialize, Deserialize)]
struct PriceChanged {
    sku: String,
}

impl Event for PriceChanged {
    const TYPE: &'static str = "PriceChanged";
    const VERSION: u32 = 1;
}

/// One service instance: its bus connection, its cache and its invalidator.
struct Instance {
    cache: Cache<i64>,
    metrics: CacheMetrics,
    /// What the source answers for every key; the test changes it as the owner would.
    price: Arc<AtomicUsize>,
    loads: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Instance {
    async fn start(bus_config: &BusConfig, price: &Arc<AtomicUsize>) -> Self {
        let bus = Bus::connect(bus_config).await.expect("bus");
        let metrics = CacheMetrics::default();
        let config = CacheConfig {
            ttl_ms: 3_600_000,
            ..CacheConfig::default()
        };
        let cache = Cache::new("prices", &config, &metrics).unwrap();
        let shutdown = CancellationToken::new();
        let invalidator = Invalidator::new("catalogue").on(PriceChanged::TYPE, &cache);
        tokio::spawn(invalidator.run(bus, shutdown.clone()));
        Self {
            cache,
            metrics,
            price: Arc::clone(price),
            loads: Arc::default(),
            shutdown,
        }
    }

    async fn price(&self, sku: &str) -> i64 {
        self.cache
            .get_or_load(sku, || async {
                self.loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Some(i64::try_from(self.price.load(Ordering::SeqCst)).unwrap()))
            })
            .await
            .unwrap()
            .unwrap()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn an_event_invalidates_the_entry_on_every_instance(bus_config: BusConfig) {
    let price = Arc::new(AtomicUsize::new(100));
    let a = Instance::start(&bus_config, &price).await;
    let b = Instance::start(&bus_config, &price).await;
    // Each invalidator clears its cache once it has subscribed; from then on it hears every event.
    for instance in [&a, &b] {
        eventually(PATIENCE, "the invalidator to subscribe", || async {
            (instance.metrics.clears("prices") > 0).then_some(())
        })
        .await;
    }
    assert_eq!(a.price("MUG-001").await, 100);
    assert_eq!(b.price("MUG-001").await, 100);
    assert_eq!(b.price("MUG-001").await, 100);
    assert_eq!(b.metrics.requests("prices", "l1", "hit"), 1);

    // The owner changes the price, then publishes (as its outbox would, after the commit).
    price.store(120, Ordering::SeqCst);
    let publisher = Bus::connect(&bus_config).await.unwrap();
    let changed = PriceChanged {
        sku: "MUG-001".into(),
    };
    let event = Envelope::new("catalogue", "MUG-001", &changed, &Context::default()).unwrap();
    publisher.publish(&event).await.unwrap();

    for instance in [&a, &b] {
        eventually(PATIENCE, "the new price on every instance", || async {
            (instance.price("MUG-001").await == 120).then_some(())
        })
        .await;
        assert_eq!(instance.loads.load(Ordering::SeqCst), 2);
    }
}

fn bus_config(url: String) -> BusConfig {
    BusConfig {
        url,
        publish_timeout_ms: 2_000,
        ..BusConfig::default()
    }
}

mod embedded {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_invalidates_the_entry_on_every_instance() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bus.db").display());
        super::an_event_invalidates_the_entry_on_every_instance(super::bus_config(url)).await;
    }
}

mod nats {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_invalidates_the_entry_on_every_instance() {
        let dir = tempfile::tempdir().unwrap();
        let server = super::NatsServer::start(dir.path()).await;
        super::an_event_invalidates_the_entry_on_every_instance(super::bus_config(server.url())).await;
        drop(server);
    }
}
