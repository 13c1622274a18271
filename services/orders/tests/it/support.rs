//! The orders service on a free loopback port over a fresh database and its backend's bus, with
//! its peers played by the test: a gRPC server answering `GetProducts` and `GetCustomer` from a
//! small catalogue, and inventory's and payments' answers published on the bus.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mercato_contracts::grpc::customers::customers_server::{Customers, CustomersServer};
use mercato_contracts::grpc::customers::{Customer, GetCustomerRequest, Preferences};
use mercato_contracts::grpc::inventory::inventory_server::{Inventory, InventoryServer};
use mercato_contracts::grpc::inventory::{GetProductsRequest, GetProductsResponse, Money, Product};
use mercato_contracts::inventory::StockReserved;
use mercato_contracts::orders::{ChargePayment, OrderLine, ReserveStock};
use mercato_contracts::payments::PaymentCaptured;
use mercato_messaging::{Bus, Context, Envelope, Event};
use mercato_orders::{CacheConfig, Config, SagaConfig};
use mercato_runtime::{CancellationToken, ClientConfig};
use mercato_testkit::listener::Listener;
use mercato_testkit::metrics::Exposition;
use mercato_testkit::service::{Backing, Instance, http_client};
use mercato_testkit::{PATIENCE, TestBackend, eventually};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

/// How long the saga waits for inventory's answer in these tests.
pub const RESERVE_TIMEOUT_MS: u64 = 1_500;

/// What inventory and customers answer over gRPC.
#[derive(Debug, Clone, Default)]
struct Peers {
    /// sku → (name, price in cents of EUR)
    catalogue: Arc<BTreeMap<String, (String, i64)>>,
    customers: Arc<Mutex<BTreeSet<String>>>,
}

#[tonic::async_trait]
impl Inventory for Peers {
    async fn get_products(
        &self,
        request: Request<GetProductsRequest>,
    ) -> Result<Response<GetProductsResponse>, Status> {
        let mut answer = GetProductsResponse::default();
        for sku in request.into_inner().skus {
            match self.catalogue.get(&sku) {
                Some((name, price)) => answer.products.push(Product {
                    sku,
                    name: name.clone(),
                    price: Some(Money {
                        amount_minor: *price,
                        currency: "EUR".into(),
                    }),
                    available: 100,
                }),
                None => answer.unknown_skus.push(sku),
            }
        }
        Ok(Response::new(answer))
    }
}

#[tonic::async_trait]
impl Customers for Peers {
    async fn get_customer(&self, request: Request<GetCustomerRequest>) -> Result<Response<Customer>, Status> {
        let id = request.into_inner().customer_id;
        if !self.customers.lock().unwrap().contains(&id) {
            return Err(Status::not_found("no such customer"));
        }
        Ok(Response::new(Customer {
            email: format!("{id}@example.com"),
            name: "Ada Lovelace".into(),
            id,
            addresses: Vec::new(),
            preferences: Some(Preferences {
                email: true,
                sms: false,
                marketing_opt_in: false,
                locale: "en".into(),
            }),
        }))
    }
}

/// A running orders service with its peers. Dropping it stops everything.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub bus: Bus,
    peers: Peers,
    /// The next position of each (category, order) the test answers on.
    positions: Mutex<HashMap<(String, String), i64>>,
    _peers_stop: CancellationToken,
    config: Config,
    instance: Instance,
    // Declared last so the service stops before its broker and database go.
    backing: Backing,
}

pub async fn spawn_app(backend: TestBackend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// The service on `backend`, a reader of what it asks of others that joined before anything
/// was placed, and a customer with a profile (their id and token): what a saga test starts with.
pub async fn spawn_for_a_customer(backend: TestBackend) -> (TestApp, Listener, (String, String)) {
    let app = spawn_app(backend).await;
    let commands = app.commands().await;
    let customer = app.customer();
    (app, commands, customer)
}

/// [`spawn_app`] with the saga's settings changed by `configure`.
pub async fn spawn_app_with(backend: TestBackend, configure: impl FnOnce(&mut SagaConfig)) -> TestApp {
    let backing = Backing::new(backend).await;
    let peers = Peers {
        catalogue: Arc::new(BTreeMap::from([
            ("MUG-001".to_owned(), ("Mug".to_owned(), 1_250)),
            ("TEE-BLK-M".to_owned(), ("T-shirt".to_owned(), 2_000)),
        ])),
        customers: Arc::default(),
    };
    let routes = tonic::service::Routes::new(InventoryServer::new(peers.clone()))
        .add_service(CustomersServer::new(peers.clone()))
        .into_axum_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peers_url = format!("http://{}", listener.local_addr().expect("an address"));
    let peers_stop = CancellationToken::new();
    let stop = peers_stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, routes)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    let mut saga = SagaConfig {
        reserve_timeout_ms: RESERVE_TIMEOUT_MS,
        payment_timeout_ms: 1_500,
        reservation_ttl_ms: 10_000,
        timer_poll_ms: 50,
        ..SagaConfig::default()
    };
    configure(&mut saga);
    let config = Config {
        service: backing.settings(),
        saga,
        inventory_url: peers_url.clone(),
        customers_url: peers_url,
        projection_poll_ms: 50,
        cache: CacheConfig::default(),
        client: ClientConfig::default(),
    };
    let bus = backing.bus().await;
    let instance = Instance::run(mercato_orders::build(&config, bus.clone()).await);
    TestApp {
        addr: instance.addr,
        http: http_client(),
        bus,
        peers,
        positions: Mutex::default(),
        _peers_stop: peers_stop,
        config,
        instance,
        backing,
    }
}

/// An order request for `items` (sku, quantity), paid with `card`.
pub fn order_body(items: &[(&str, i64)], card: &str) -> Value {
    json!({
        "items": items.iter().map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity})).collect::<Vec<_>>(),
        "payment": {"card_token": card},
        "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
    })
}

impl TestApp {
    /// The service's database, for a test that opens it beside the service.
    pub fn database(&self) -> &mercato_storage::DatabaseConfig {
        &self.config.service.database
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A customer with a profile (customers knows them), and their token.
    pub fn customer(&self) -> (String, String) {
        let id = format!("cust-{}", uuid::Uuid::new_v4().simple());
        self.peers.customers.lock().unwrap().insert(id.clone());
        let token = self.backing.issuer.token(&id, &["customer"]);
        (id, token)
    }

    /// A token for a customer that customers has no profile of.
    pub fn stranger_token(&self) -> String {
        self.backing.issuer.token("nobody-yet", &["customer"])
    }

    pub fn admin_token(&self) -> String {
        self.backing.issuer.token("admin-1", &["customer", "admin"])
    }

    /// `POST /api/orders` with an optional idempotency key.
    pub async fn place(&self, token: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/api/orders"))
            .bearer_auth(token)
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("the service answers")
    }

    /// Places an order that must be accepted; returns its id.
    pub async fn placed(&self, token: &str, items: &[(&str, i64)], card: &str) -> String {
        let response = self.place(token, &order_body(items, card), None).await;
        assert_eq!(response.status(), 201, "placing an order");
        let body: Value = response.json().await.expect("a JSON order");
        assert_eq!(body["status"], "pending");
        body["id"].as_str().expect("an id").to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, token, path).await
    }

    pub async fn post(&self, token: &str, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::POST, token, path).await
    }

    async fn send(&self, method: reqwest::Method, token: &str, path: &str) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the service answers")
    }

    /// Kills the service without a graceful stop and starts a new process of it on the same
    /// database and bus (on another port).
    pub async fn crash_and_restart(&mut self) {
        self.instance.abort().await;
        let bus = self.backing.bus().await;
        self.instance = Instance::run(mercato_orders::build(&self.config, bus).await);
        self.addr = self.instance.addr;
    }

    /// The service's `/metrics`, read as samples.
    pub async fn exposition(&self) -> Exposition {
        // `/metrics` needs no token; an empty one is ignored.
        let text = self.get("", "/metrics").await.text().await.unwrap_or_default();
        Exposition::parse(&text)
    }

    /// The value of the service's metric `name` (a series without labels).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        // `/metrics` needs no token; an empty one is ignored.
        let text = self.get("", "/metrics").await.text().await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Polls the order until its status is `status`, and returns it.
    pub async fn wait_for_status(&self, token: &str, order: &str, status: &str) -> Value {
        self.wait_for(token, order, &format!("to be {status}"), |body| {
            body["status"] == status
        })
        .await
    }

    /// Polls the order until `done` holds for it (`what` says what is awaited), and returns it.
    pub async fn wait_for(
        &self,
        token: &str,
        order: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(PATIENCE, &format!("order {order} {what}"), || async {
            let body: Value = self
                .get(token, &format!("/api/orders/{order}"))
                .await
                .json()
                .await
                .ok()?;
            done(&body).then_some(body)
        })
        .await
    }

    /// Publishes `event` on the order's stream as service `source` would (its next position).
    pub async fn answer<E: Event>(&self, source: &str, order: &str, event: &E) -> Envelope {
        let mut envelope = Envelope::new(source, order, event, &Context::default()).expect("an envelope");
        envelope.stream_seq = {
            let mut positions = self.positions.lock().unwrap();
            let next = positions
                .entry((source.to_owned(), order.to_owned()))
                .or_insert(0);
            *next += 1;
            *next
        };
        self.bus.publish(&envelope).await.expect("publish an answer");
        envelope
    }

    /// Plays inventory: waits for the order's `ReserveStock` and answers that every line is held.
    pub async fn stock_reserved(&self, commands: &mut Listener, order: &str) -> Vec<OrderLine> {
        let (_, reserve) = commands.first::<ReserveStock>(order).await;
        let answer = StockReserved {
            order_id: order.into(),
            lines: reserve.lines.clone(),
            expires_at: mercato_storage::now_millis() + 60_000,
        };
        self.answer("inventory", order, &answer).await;
        reserve.lines
    }

    /// Plays payments: waits for the order's `ChargePayment` and answers that it was captured.
    pub async fn payment_captured(&self, commands: &mut Listener, order: &str) -> ChargePayment {
        let (_, charge) = commands.first::<ChargePayment>(order).await;
        let answer = PaymentCaptured {
            order_id: order.into(),
            payment_id: format!("pay-{order}"),
            amount: charge.amount,
        };
        self.answer("payments", order, &answer).await;
        charge
    }

    /// What orders asks of other services and tells them, as they would read it.
    pub async fn commands(&self) -> Listener {
        Listener::join(&self.bus, "orders-it", mercato_contracts::orders::CATEGORY).await
    }
}

/// The event types the saga wrote on `order`'s stream so far, in the order they arrived.
pub fn types_on(listener: &Listener, order: &str) -> Vec<String> {
    listener
        .seen
        .iter()
        .filter(|e| e.stream_id == order)
        .map(|e| e.event_type.clone())
        .collect()
}
