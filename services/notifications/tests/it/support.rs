//! The notifications service on a free loopback port over a fresh database and bus, a JWKS
//! issuer for tokens, an SMTP sink for email, and helpers that publish events the way the
//! other services do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use mercato_contracts::customers::{CustomerCreated, CustomerUpdated, Preferences};
use mercato_contracts::identity::UserRegistered;
use mercato_contracts::money::{Currency, Money};
use mercato_contracts::orders::{OrderCancelled, OrderConfirmed, OrderShipped, PricedLine};
use mercato_messaging::{Bus, BusConfig, Context, Envelope, Event, InboxConfig};
use mercato_notifications::store::{self, CustomerCopy, Delivery};
use mercato_notifications::{Config, SmtpConfig};
use mercato_runtime::{CancellationToken, HttpConfig};
use mercato_storage::{DatabaseConfig, Db};
use mercato_testkit::auth::TestIssuer;
use mercato_testkit::nats::NatsServer;
use mercato_testkit::{TestBackend, TestDatabase, eventually};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::smtp_sink::SmtpSink;

/// An upper bound for anything a test waits on, so a broken service fails a test instead of
/// hanging it.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Attempts per email in tests.
pub const MAX_ATTEMPTS: u32 = 3;

/// A running notifications service. Dropping it stops the service, then drops its database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub bus: Bus,
    /// A connection of the test's own to the service's database, for the delivery log.
    pub db: Db,
    pub issuer: TestIssuer,
    pub smtp: SmtpSink,
    pub config: Config,
    /// The next position of each (category, stream) this test publishes to.
    positions: Mutex<HashMap<(String, String), i64>>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _nats: Option<NatsServer>,
    // Declared last so the service is told to stop before its database goes.
    _database: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The test's broker: an embedded bus file beside the SQLite database, or a private NATS
/// server beside the PostgreSQL one.
pub async fn bus_for(backend: TestBackend, database: &TestDatabase) -> (Bus, Option<NatsServer>) {
    let (nats, url) = match backend {
        TestBackend::Sqlite => (
            None,
            format!("sqlite://{}?mode=rwc", database.dir().join("bus.db").display()),
        ),
        TestBackend::Postgres => {
            let server = NatsServer::start(database.dir()).await;
            let url = server.url();
            (Some(server), url)
        }
    };
    let bus = Bus::connect(&BusConfig {
        url,
        ..BusConfig::default()
    })
    .await
    .expect("connect the bus");
    (bus, nats)
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
    let database = TestDatabase::new(backend).await;
    let (bus, nats) = bus_for(backend, &database).await;
    let issuer = TestIssuer::start().await;
    let smtp = SmtpSink::start().await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        http: HttpConfig::default(),
        database: DatabaseConfig {
            url: database.url().into(),
            ..DatabaseConfig::default()
        },
        auth: issuer.config(),
        jwks_url: issuer.jwks_url().to_owned(),
        inbox: InboxConfig {
            backoff_ms: vec![20, 50],
            fetch_wait_ms: 250,
            ..InboxConfig::default()
        },
        smtp: smtp_config(smtp.port()),
        worker_poll_ms: 25,
    };
    customise(&mut config);
    let app = mercato_notifications::build(&config, bus.clone())
        .await
        .expect("build the notifications service");
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let db = Db::connect(&config.database).await.expect("a second connection");
    TestApp {
        addr,
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .build()
            .expect("build the test client"),
        bus,
        db,
        issuer,
        smtp,
        config,
        positions: Mutex::default(),
        shutdown,
        server: Some(server),
        _nats: nats,
        _database: database,
    }
}

pub fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::EUR)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

impl TestApp {
    /// Stops the service and returns what `run_until_stopped` returned.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        let server = self.server.take().expect("the service is running");
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("run_until_stopped returns")
            .expect("the server task does not panic")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Publishes `event` as service `source` would: the next position of its stream.
    pub async fn publish<E: Event>(&self, source: &str, stream: &str, event: &E) -> Envelope {
        let mut envelope = Envelope::new(source, stream, event, &Context::default()).expect("an envelope");
        envelope.stream_seq = {
            let mut positions = self.positions.lock().unwrap();
            let next = positions
                .entry((source.to_owned(), stream.to_owned()))
                .or_insert(0);
            *next += 1;
            *next
        };
        self.republish(&envelope).await;
        envelope
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
        self.http
            .get(self.url(&format!("/api/notifications{query}")))
            .bearer_auth(self.issuer.token(user, &["customer"]))
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
