//! The inventory service on a free loopback port over a fresh database and a private bus, seeded
//! with the demo catalogue, and helpers to drive it over HTTP, gRPC and the bus as the gateway and
//! the checkout saga would.

use std::net::SocketAddr;

use mercato_contracts::orders::{CommitReservation, OrderLine, ReleaseStock, ReserveStock};
use mercato_inventory::store::MIGRATIONS;
use mercato_inventory::store::{products, reservations};
use mercato_inventory::{Config, InventoryConfig, NAME};
use mercato_messaging::{Bus, Envelope, Event};
use mercato_storage::{Db, now_millis};
use mercato_testkit::TestBackend;
use mercato_testkit::listener::Listener;
use mercato_testkit::publish::{order_context, publish_at};
use mercato_testkit::service::{Backing, Instance, http_client};
use serde_json::Value;

pub use mercato_testkit::PATIENCE;
pub use mercato_testkit::problem::{expect_problem, invalid_fields};

/// A reservation that will not expire while a test runs.
pub fn far_future() -> i64 {
    now_millis() + 3_600_000
}

/// A running inventory service. Dropping it stops the service(s), then the bus, then the
/// database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// The bus the service consumes from and publishes to: a test publishes the saga's commands
    /// here.
    pub bus: Bus,
    /// A connection of the test's own to the service's database, for what no API shows.
    pub db: Db,
    pub config: Config,
    instances: Vec<Instance>,
    // Declared last so the services stop before their broker and database go.
    backing: Backing,
}

/// Starts the service on `backend`: SQLite with the embedded bus, or PostgreSQL with a private
/// NATS JetStream server; the demo catalogue is loaded.
pub async fn spawn_app(backend: TestBackend) -> TestApp {
    let backing = Backing::new(backend).await;
    let config = Config {
        service: backing.settings(),
        inventory: InventoryConfig {
            reservation_sweep_ms: 50,
            demo_catalogue: true,
        },
    };
    let db = mercato_kit::builder::open_database(NAME, &config.service.database, MIGRATIONS)
        .await
        .expect("open the inventory database");
    let mut app = TestApp {
        addr: "127.0.0.1:0".parse().expect("a socket address"),
        http: http_client(),
        bus: backing.bus().await,
        db,
        config,
        instances: Vec::new(),
        backing,
    };
    app.addr = app.start_replica().await;
    app
}

/// The service on `backend`, a reader of its answers that joined before anything was sent, and
/// a fresh order id: what a test of one order's stock commands starts with.
pub async fn spawn_for_an_order(backend: TestBackend) -> (TestApp, Answers, String) {
    let app = spawn_app(backend).await;
    let answers = app.answers().await;
    (app, answers, order_id())
}

impl TestApp {
    /// Starts one more instance on the same database and bus (another replica, as a second pod
    /// would be), and returns its address.
    pub async fn start_replica(&mut self) -> SocketAddr {
        let instance = Instance::run(mercato_inventory::build(&self.config, self.backing.bus().await).await);
        let addr = instance.addr;
        self.instances.push(instance);
        addr
    }

    /// The address of every running instance.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.instances.iter().map(|i| i.addr).collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_token(&self) -> String {
        self.backing.issuer.token("admin-1", &["customer", "admin"])
    }

    pub fn customer_token(&self) -> String {
        self.backing.issuer.token("customer-1", &["customer"])
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("the service answers")
    }

    /// `GET /api/products/{sku}`, which must succeed.
    pub async fn product(&self, sku: &str) -> Value {
        let response = self.get(&format!("/api/products/{sku}")).await;
        assert_eq!(response.status(), 200, "GET product {sku}");
        response.json().await.expect("a JSON product")
    }

    pub async fn available(&self, sku: &str) -> i64 {
        self.product(sku).await["available"]
            .as_i64()
            .expect("available is a number")
    }

    /// A `PUT` with an optional bearer token and a JSON body.
    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.http.put(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the service answers")
    }

    /// A `PUT` with an admin's token.
    pub async fn admin_put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.put(path, Some(&self.admin_token()), body).await
    }

    /// Sets the stock as an admin; must succeed.
    pub async fn set_stock(&self, sku: &str, quantity: i64) -> Value {
        let response = self
            .admin_put(
                &format!("/api/products/{sku}/stock"),
                &serde_json::json!({"quantity": quantity}),
            )
            .await;
        assert_eq!(response.status(), 200, "setting the stock of {sku}");
        response.json().await.expect("a JSON product")
    }

    /// (on_hand, reserved) as stored.
    pub async fn stock(&self, sku: &str) -> (i64, i64) {
        let sku = mercato_inventory::domain::Sku::parse(sku).expect("a SKU");
        let product = products::find(self.db.pool(), &sku)
            .await
            .expect("read the product")
            .expect("the product exists");
        (product.on_hand.value(), product.reserved.value())
    }

    /// The state of the order's reservation as stored.
    pub async fn reservation_state(&self, order_id: &str) -> Option<&'static str> {
        let mut conn = self.db.pool().acquire().await.expect("a connection");
        reservations::find(&mut conn, order_id)
            .await
            .expect("read the reservation")
            .map(|r| r.state.as_str())
    }

    /// The types of the events inventory has written for `stream` (an order or a SKU), in
    /// order. Read from the outbox, so it is exact the moment the writing transaction commits.
    pub async fn written(&self, stream: &str) -> Vec<String> {
        mercato_testkit::outbox::event_types(&self.db, stream).await
    }

    /// How many order events the inboxes of all instances have applied (no-ops included).
    pub async fn commands_applied(&self) -> u64 {
        let mut applied = 0;
        for addr in self.addrs() {
            let text = self
                .http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .expect("the service answers")
                .text()
                .await
                .expect("metrics text");
            applied += text
                .lines()
                .find(|l| {
                    l.starts_with("mercato_consumer_messages_total{")
                        && l.contains("subscriber=\"inventory-on-orders\"")
                        && l.contains("outcome=\"applied\"")
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        applied
    }

    /// Waits until the inboxes have applied `count` order events in all.
    pub async fn until_applied(&self, count: u64) {
        mercato_testkit::eventually(PATIENCE, &format!("{count} commands applied"), || async {
            (self.commands_applied().await >= count).then_some(())
        })
        .await;
    }

    /// Publishes one of the saga's commands for `order_id` at position `seq` of the order's
    /// stream, as the orders service's relay would.
    pub async fn send<E: Event>(&self, order_id: &str, seq: i64, command: &E) -> Envelope {
        let context = order_context(order_id);
        publish_at(
            &self.bus,
            mercato_contracts::orders::CATEGORY,
            order_id,
            seq,
            command,
            &context,
        )
        .await
    }

    pub async fn reserve(
        &self,
        order_id: &str,
        seq: i64,
        lines: &[(&str, i64)],
        expires_at: i64,
    ) -> Envelope {
        let command = ReserveStock {
            order_id: order_id.to_owned(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| OrderLine {
                    sku: (*sku).to_owned(),
                    quantity: *quantity,
                })
                .collect(),
            expires_at,
        };
        self.send(order_id, seq, &command).await
    }

    pub async fn release(&self, order_id: &str, seq: i64) -> Envelope {
        let command = ReleaseStock {
            order_id: order_id.to_owned(),
            reason: "payment_declined".into(),
        };
        self.send(order_id, seq, &command).await
    }

    pub async fn commit(&self, order_id: &str, seq: i64) -> Envelope {
        let command = CommitReservation {
            order_id: order_id.to_owned(),
        };
        self.send(order_id, seq, &command).await
    }

    /// A reader of inventory's events, as another service would consume them.
    pub async fn answers(&self) -> Answers {
        Answers(Listener::join(&self.bus, "inventory-it", mercato_contracts::inventory::CATEGORY).await)
    }
}

/// Inventory's events as they arrive on the bus.
pub struct Answers(Listener);

impl std::ops::Deref for Answers {
    type Target = Listener;
    fn deref(&self) -> &Listener {
        &self.0
    }
}

impl std::ops::DerefMut for Answers {
    fn deref_mut(&mut self) -> &mut Listener {
        &mut self.0
    }
}

impl Answers {
    /// The answer to an order: the first inventory event on its stream of type `E`.
    pub async fn for_order<E: Event>(&mut self, order_id: &str) -> E {
        let (envelope, event) = self.0.first::<E>(order_id).await;
        assert_eq!(envelope.source, "inventory");
        event
    }
}

/// A fresh order id.
pub fn order_id() -> String {
    format!("order-{}", uuid::Uuid::new_v4().simple())
}
