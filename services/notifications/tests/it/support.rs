//! The notifications service on a free loopback port over a fresh database and bus, a JWKS
//! issuer for tokens, an SMTP sink for email, and helpers that publish events the way the
//! other services do.

use std::collections::HashMap;
use std::sync::Mutex;

use mercato_contracts::customers::{CustomerCreated, CustomerUpdated, Preferences};
use mercato_contracts::identity::UserRegistered;
use mercato_contracts::money::{Currency, Money};
use mercato_contracts::orders::{OrderCancelled, OrderConfirmed, OrderShipped, PricedLine};
use mercato_kit::ServiceSettings;
use mercato_messaging::{Bus, Context, Envelope, Event, InboxConfig};
use mercato_notifications::store::{self, CustomerCopy, Delivery};
use mercato_notifications::{Config, NotificationsConfig, SmtpConfig};
use mercato_storage::Db;
use mercato_testkit::publish::publish_at;
use mercato_testkit::service::{Api, Backing, Instance};
use mercato_testkit::{TestBackend, eventually};
use serde_json::Value;

pub use mercato_testkit::PATIENCE;

use crate::smtp_sink::SmtpSink;

/// Attempts per email in tests.
pub const MAX_ATTEMPTS: u32 = 3;

/// A running notifications service. Dropping it stops the service, then drops its database.
pub struct TestApp {
    /// `url`, `get`, `post` and the `http` client, reached through `Deref`.
    pub api: Api,
    pub bus: Bus,
    /// A connection of the test's own to the service's database, for the delivery log.
    pub db: Db,
    pub smtp: SmtpSink,
    pub config: Config,
    /// The next position of each (category, stream) this test publishes to.
    positions: Mutex<HashMap<(String, String), i64>>,
    instance: Instance,
    // Declared last so the service is told to stop before its broker and database go.
    backing: Backing,
}

pub fn smtp_config(port: u16) -> SmtpConfig {
    SmtpConfig {
        enabled: true,
        host: "127.0.0.1".into(),
        port,
        from: "no-reply@mercato.test".into(),
        timeout_ms: 5_000,
        max_attempts: MAX_ATTEMPTS,
        backoff_ms: 20,
    }
}

pub async fn spawn_app(backend: TestBackend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns the service after `customise` has adjusted its configuration.
pub async fn spawn_app_with(backend: TestBackend, customise: impl FnOnce(&mut Config)) -> TestApp {
    let backing = Backing::new(backend).await;
    let bus = backing.bus().await;
    let smtp = SmtpSink::start().await;
    let defaults = backing.settings();
    let mut config = Config {
        service: ServiceSettings {
            inbox: InboxConfig {
                backoff_ms: vec![20, 50],
                fetch_wait_ms: 250,
                ..defaults.inbox.clone()
            },
            ..defaults
        },
        notifications: NotificationsConfig {
            smtp: smtp_config(smtp.port()),
            worker_poll_ms: 25,
        },
    };
    customise(&mut config);
    let instance = Instance::run(mercato_notifications::build(&config, bus.clone()).await);
    let addr = instance.addr;
    let db = Db::connect(&config.service.database)
        .await
        .expect("a second connection");
    TestApp {
        api: Api::new(addr),
        bus,
        db,
        smtp,
        config,
        positions: Mutex::default(),
        instance,
        backing,
    }
}

pub fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::EUR)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

mercato_testkit::deref_to_api!(TestApp);

impl TestApp {
    /// Stops the service and returns what `run_until_stopped` returned.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        self.instance.stop().await
    }

    /// Waits until the service's metrics hold every one of `samples`.
    pub async fn wait_for_metrics(&self, what: &str, samples: &[&str]) {
        eventually(PATIENCE, what, || async {
            let response = self.get("/metrics").send().await.ok()?;
            let text = response.text().await.ok()?;
            samples.iter().all(|s| text.contains(s)).then_some(())
        })
        .await;
    }

    /// Publishes `event` as service `source` would: the next position of its stream.
    pub async fn publish<E: Event>(&self, source: &str, stream: &str, event: &E) -> Envelope {
        let seq = {
            let mut positions = self.positions.lock().unwrap();
            let next = positions
                .entry((source.to_owned(), stream.to_owned()))
                .or_insert(0);
            *next += 1;
            *next
        };
        publish_at(&self.bus, source, stream, seq, event, &Context::default()).await
    }

    /// Publishes an envelope again, as a relay that crashed before marking it would.
    pub async fn republish(&self, envelope: &Envelope) {
        self.bus.publish(envelope).await.expect("publish");
    }

    pub async fn user_registered(&self, user_id: &str, email: &str, name: &str) -> Envelope {
        let event = UserRegistered {
            user_id: user_id.into(),
            email: email.into(),
            name: name.into(),
        };
        self.publish("identity", user_id, &event).await
    }

    /// Customers' events for a customer with these preferences, and waits until notifications
    /// has taken them in (categories are consumed independently, so a test that goes on to
    /// publish orders must not race them).
    pub async fn customer(&self, id: &str, email: &str, name: &str, email_on: bool, locale: &str) {
        let created = CustomerCreated {
            customer_id: id.into(),
            email: email.into(),
            name: name.into(),
        };
        self.publish("customers", id, &created).await;
        let preferences = Preferences {
            email: email_on,
            locale: locale.into(),
            ..Preferences::default()
        };
        let updated = CustomerUpdated {
            customer_id: id.into(),
            email: email.into(),
            name: name.into(),
            addresses: Vec::new(),
            preferences,
        };
        self.publish("customers", id, &updated).await;
        eventually(PATIENCE, "the customer's preferences to arrive", || async {
            let copy: CustomerCopy = store::customer(self.db.pool(), id).await.ok()??;
            (copy.locale == locale && copy.email_enabled == email_on).then_some(())
        })
        .await;
    }

    pub async fn order_confirmed(&self, customer_id: &str, order_id: &str) -> Envelope {
        let event = OrderConfirmed {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
            lines: vec![PricedLine {
                sku: "MUG-1".into(),
                name: "Tea mug".into(),
                quantity: 2,
                unit_price: eur(1250),
            }],
            total: eur(2500),
        };
        self.publish("orders", order_id, &event).await
    }

    pub async fn order_cancelled(&self, customer_id: &str, order_id: &str, reason: &str) -> Envelope {
        let event = OrderCancelled {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
            reason: reason.into(),
        };
        self.publish("orders", order_id, &event).await
    }

    pub async fn order_shipped(&self, customer_id: &str, order_id: &str) -> Envelope {
        let event = OrderShipped {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
        };
        self.publish("orders", order_id, &event).await
    }

    /// `GET /api/notifications` with `query` (e.g. `?page_size=2`) as `user`.
    pub async fn mailbox_response(&self, user: &str, query: &str) -> reqwest::Response {
        self.get(&format!("/api/notifications{query}"))
            .bearer_auth(self.backing.issuer.token(user, &["customer"]))
            .send()
            .await
            .expect("the mailbox answers")
    }

    /// The first page of `user`'s mailbox (up to 100 messages).
    pub async fn mailbox(&self, user: &str) -> Vec<Value> {
        let response = self.mailbox_response(user, "?page_size=100").await;
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.expect("a JSON page");
        page["items"].as_array().expect("items").clone()
    }

    /// Waits until `user`'s mailbox holds `count` messages, and returns them.
    pub async fn wait_for_mailbox(&self, user: &str, count: usize) -> Vec<Value> {
        eventually(
            PATIENCE,
            &format!("{count} messages in {user}'s mailbox"),
            || async {
                let items = self.mailbox(user).await;
                (items.len() >= count).then_some(items)
            },
        )
        .await
    }

    /// Every notification row for `customer`, oldest first.
    pub async fn deliveries(&self, customer: &str) -> Vec<Delivery> {
        store::deliveries(&self.db, customer)
            .await
            .expect("the delivery log")
    }

    /// The customer's email rows.
    pub async fn emails(&self, customer: &str) -> Vec<Delivery> {
        self.deliveries(customer)
            .await
            .into_iter()
            .filter(|d| d.channel == "email")
            .collect()
    }

    /// Waits until every email row of `customer` (at least `count`) is in a final state.
    pub async fn wait_for_emails_settled(&self, customer: &str, count: usize) -> Vec<Delivery> {
        eventually(
            PATIENCE,
            &format!("{count} settled emails for {customer}"),
            || async {
                let emails = self.emails(customer).await;
                let settled =
                    emails.len() >= count && emails.iter().all(|e| e.state == "sent" || e.state == "failed");
                settled.then_some(emails)
            },
        )
        .await
    }
}
