//! Orders' cached lookups across instances: a price change on inventory reaches a second orders
//! instance through the invalidation event, long before the (one hour) TTL. Embedded (L1 only)
//! and distributed (PostgreSQL, NATS and Redis as L2).

use std::collections::BTreeMap;

use mercato::ServiceName;
use mercato_runtime::CancellationToken;
use mercato_testkit::{TestBackend, eventually};
use serde_json::{Value, json};

use crate::support::{PATIENCE, System, fresh, metrics_of, unique_email};

const SKU: &str = "MUG-001";

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_price_change_reaches_another_orders_instance_through_invalidation_not_the_ttl() {
        super::a_price_change_reaches_another_orders_instance(mercato_testkit::TestBackend::Sqlite, None)
            .await;
    }
}

mod postgres {
    mod redis {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_price_change_reaches_another_orders_instance_through_invalidation_not_the_ttl() {
            let url = mercato_testkit::redis::url();
            super::super::a_price_change_reaches_another_orders_instance(
                mercato_testkit::TestBackend::Postgres,
                Some(url),
            )
            .await;
        }
    }
}

/// A second orders instance on the system's database and bus, reached directly.
struct SecondOrders {
    url: String,
    shutdown: CancellationToken,
}

impl SecondOrders {
    async fn start(system: &System) -> Self {
        let urls: BTreeMap<ServiceName, String> = ServiceName::ALL
            .iter()
            .filter_map(|s| system.urls.get(s.as_str()).map(|u| (*s, u.clone())))
            .collect();
        let config = mercato::service_config::orders(&system.config, &urls);
        let bus = mercato_messaging::Bus::connect(&system.config.bus).await.unwrap();
        let app = mercato_orders::build(&config, bus).await.unwrap();
        let url = format!("http://{}", app.local_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { url, shutdown }
    }

    /// Places an order for one `SKU` and returns the unit price it was given.
    async fn order_price(&self, system: &System, token: &str) -> i64 {
        let response = system
            .http
            .post(format!("{}/api/orders", self.url))
            .bearer_auth(token)
            .json(&json!({
                "items": [{"sku": SKU, "quantity": 1}],
                "payment": {"card_token": "tok_visa"},
                "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let order: Value = response.json().await.unwrap();
        order["items"][0]["unit_price"]["amount_minor"].as_i64().unwrap()
    }

    async fn metric(&self, system: &System, line_start: &str) -> u64 {
        let text = metrics_of(&system.http, &self.url).await.expect("orders answers");
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

impl Drop for SecondOrders {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn a_price_change_reaches_another_orders_instance(backend: TestBackend, redis_url: Option<String>) {
    let (_fixture, mut config) = fresh(backend).await;
    // Only an invalidation can make the new price visible within the test.
    config.cache.ttl_ms = 3_600_000;
    // Emptied when the test ends.
    let prefix = mercato_testkit::redis::KeyPrefix::new();
    if let Some(url) = redis_url {
        config.cache.redis_url = url;
        config.cache.key_prefix = prefix.as_str().to_owned();
    }
    let system = System::start(config).await;
    let second = SecondOrders::start(&system).await;
    let customer = system.customer(&unique_email()).await;
    let admin = system.admin().await;
    system.set_stock(&admin, SKU, 1000).await;

    let before = second.order_price(&system, &customer).await;
    // The stock change above invalidates the product too, whenever its event arrives; once it
    // has, a repeat lookup is a hit.
    let hits = r#"cache_requests_total{cache="products",level="l1",result="hit"}"#;
    eventually(PATIENCE, "an order priced from the cache", || async {
        assert_eq!(second.order_price(&system, &customer).await, before);
        (second.metric(&system, hits).await >= 1).then_some(())
    })
    .await;

    let after = before + 250;
    let price = json!({"price": {"amount_minor": after, "currency": "EUR"}});
    system
        .put_ok(&format!("/api/products/{SKU}/price"), &admin, &price)
        .await;

    eventually(
        PATIENCE,
        "the second instance to price with the new price",
        || async { (second.order_price(&system, &customer).await == after).then_some(()) },
    )
    .await;
    let invalidations = r#"cache_invalidations_total{cache="products"}"#;
    assert!(second.metric(&system, invalidations).await >= 1);
    drop(second);
    system.stop().await;
}
