//! A payments service on a free loopback port over a fresh database and bus, talking to a real
//! payment sandbox on another free port, and the saga's side of the conversation: publishing
//! commands on `orders` and reading answers from `payments`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use mercato_contracts::money::{Currency, Money};
use mercato_contracts::orders::{ChargePayment, RefundPayment};
use mercato_contracts::payments::{PaymentCaptured, PaymentFailed, PaymentFailure};
use mercato_kit::ServiceSettings;
use mercato_messaging::{Bus, Consumer, ConsumerSpec, Envelope, Event, InboxConfig, RelayConfig};
use mercato_payments::sandbox::{self, SandboxConfig};
use mercato_payments::store::{self, Payment};
use mercato_payments::{Config, PaymentsConfig, ProviderConfig};
use mercato_runtime::{CancellationToken, HttpConfig};
use mercato_storage::Db;
use mercato_storage::sqlx::{self, Row as _};
use mercato_testkit::auth::TestIssuer;
use mercato_testkit::publish::{order_context, publish_at};
use mercato_testkit::service::{Backing, Instance};
use mercato_testkit::{TestBackend, eventually};
use serde_json::Value;

pub use mercato_testkit::PATIENCE;
pub use mercato_testkit::problem::expect_problem;

/// The amount every test order costs.
pub fn amount() -> Money {
    Money::new(4_250, Currency::EUR)
}

/// A running payment sandbox. Dropping it stops it.
pub struct Sandbox {
    pub url: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Sandbox {
    pub async fn start(late_delay_ms: u64) -> Self {
        let config = SandboxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: HttpConfig {
                shutdown_grace_ms: 1_000,
                ..HttpConfig::default()
            },
            late_delay_ms,
            ..SandboxConfig::default()
        };
        let app = sandbox::build(&config).await.expect("build the sandbox");
        let url = format!("http://{}", app.local_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            url,
            http: client(),
            shutdown,
        }
    }

    /// `POST /v1/charges` with `key` (none when `None`) and a JSON body.
    pub async fn post_charge(&self, key: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/v1/charges", self.url)).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("the sandbox answers")
    }

    /// The charge made by `POST /v1/charges` with `key` and `body`, as the sandbox shows it.
    pub async fn charged(&self, key: &str, body: &Value) -> Value {
        let response = self.post_charge(Some(key), body).await;
        response.json().await.expect("a charge is JSON")
    }

    /// `POST /v1/refunds` with `key`.
    pub async fn post_refund(&self, key: &str, charge_id: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/refunds", self.url))
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({ "charge_id": charge_id }))
            .send()
            .await
            .expect("the sandbox answers")
    }

    /// `GET /v1/charges/{id}`.
    pub async fn charge(&self, id: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/v1/charges/{id}", self.url))
            .send()
            .await
            .expect("the sandbox answers")
    }

    /// The charges made with an idempotency key.
    pub async fn charges(&self, key: &str) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/v1/charges", self.url))
            .query(&[("idempotency_key", key)])
            .send()
            .await
            .expect("the sandbox answers");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("a JSON list");
        body["data"].as_array().expect("a data array").clone()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub use mercato_testkit::service::http_client as client;

/// What a test may change before the service starts.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub provider: ProviderConfig,
    pub late_delay_ms: u64,
}

/// The payments service with everything around it. Dropping it stops everything and drops the
/// database.
pub struct TestApp {
    pub sandbox: Sandbox,
    pub bus: Bus,
    pub http: reqwest::Client,
    pub config: Config,
    /// A connection of the test's own to the service's database, for looking at rows.
    pub db: Db,
    running: Option<Instance>,
    /// Further instances on the same database and bus.
    replicas: Vec<Instance>,
    answers: Consumer,
    /// Every answer read so far, in the order it was read.
    seen: Vec<Envelope>,
    /// The next stream position of each order's commands.
    seqs: HashMap<String, i64>,
    // Declared last: the service stops before its broker and database go.
    backing: Backing,
}

pub async fn spawn_app(backend: TestBackend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts the sandbox, the bus and the service after `tune` has adjusted the settings.
pub async fn spawn_app_with(backend: TestBackend, tune: impl FnOnce(&mut Tuning)) -> TestApp {
    let mut tuning = Tuning {
        provider: ProviderConfig {
            timeout_ms: 2_000,
            max_attempts: 5,
            backoff_ms: 50,
            max_backoff_ms: 400,
            ..ProviderConfig::default()
        },
        late_delay_ms: 1_500,
    };
    tune(&mut tuning);
    let mut backing = Backing::new(backend).await;
    backing.tune_bus(|bus| bus.ack_wait_ms = 2_000);
    let bus = backing.bus().await;
    let sandbox = Sandbox::start(tuning.late_delay_ms).await;
    let defaults = backing.settings();
    let config = Config {
        service: ServiceSettings {
            http: HttpConfig {
                shutdown_grace_ms: 5_000,
                ..HttpConfig::default()
            },
            relay: RelayConfig {
                retry_delay_ms: 100,
                ..defaults.relay.clone()
            },
            inbox: InboxConfig {
                reorder_delay_ms: 50,
                ..defaults.inbox.clone()
            },
            ..defaults
        },
        payments: PaymentsConfig {
            provider: ProviderConfig {
                url: sandbox.url.clone(),
                ..tuning.provider
            },
            worker_poll_ms: 50,
        },
        client: mercato_runtime::ClientConfig::default(),
    };
    let answers = bus
        .consumer(&ConsumerSpec {
            group: "saga-under-test".into(),
            category: "payments".into(),
            event_types: Vec::new(),
        })
        .await
        .expect("join the answers group");
    let db = Db::connect(&config.service.database)
        .await
        .expect("connect to the test database");
    let mut payments = TestApp {
        sandbox,
        bus,
        http: client(),
        config,
        db,
        running: None,
        replicas: Vec::new(),
        answers,
        seen: Vec::new(),
        seqs: HashMap::new(),
        backing,
    };
    payments.start().await;
    payments
}

impl TestApp {
    /// The issuer of the tokens the service accepts.
    pub fn issuer(&self) -> &TestIssuer {
        &self.backing.issuer
    }

    /// Builds the service (again) on the same database and bus, and runs it.
    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "the service is running already");
        self.running = Some(self.launch().await);
    }

    /// Starts one more instance beside the first, as a second replica would run.
    pub async fn start_replica(&mut self) {
        let replica = self.launch().await;
        self.replicas.push(replica);
    }

    async fn launch(&self) -> Instance {
        Instance::run(mercato_payments::build(&self.config, self.bus.clone()).await)
    }

    /// Stops the service as SIGTERM would, and waits until it has stopped.
    pub async fn stop(&mut self) {
        let mut running = self.running.take().expect("the service is running");
        running.stop().await.expect("the service stops cleanly");
    }

    /// Kills the service where it stands: no shutdown, nothing given back.
    pub async fn crash(&mut self) {
        let mut running = self.running.take().expect("the service is running");
        running.abort().await;
    }

    pub fn url(&self, path: &str) -> String {
        let running = self.running.as_ref().expect("the service is running");
        format!("http://{}{path}", running.addr)
    }

    /// Publishes a command on `orders` the way the saga's outbox would: the order id as the
    /// stream, positions 1, 2, … per order.
    pub async fn send<E: Event>(&mut self, order_id: &str, command: &E) -> Envelope {
        let seq = self.seqs.entry(order_id.to_owned()).or_insert(0);
        *seq += 1;
        publish_at(
            &self.bus,
            "orders",
            order_id,
            *seq,
            command,
            &order_context(order_id),
        )
        .await
    }

    /// Asks for a charge of [`amount`] to `card` for `order_id`, by `customer_id`.
    pub async fn charge(&mut self, order_id: &str, customer_id: &str, card: &str) -> Envelope {
        let command = charge_command(order_id, customer_id, card);
        self.send(order_id, &command).await
    }

    /// A fresh order charged to `customer_id`'s good card, once its capture has been answered.
    pub async fn captured_order(&mut self, customer_id: &str) -> String {
        let order = order_id();
        self.charge(&order, customer_id, "tok_visa").await;
        self.answer::<PaymentCaptured>(&order).await;
        order
    }

    /// Asks for the order's payment to be refunded.
    pub async fn refund(&mut self, order_id: &str) -> Envelope {
        let command = RefundPayment {
            order_id: order_id.to_owned(),
            reason: "payment_timeout".into(),
        };
        self.send(order_id, &command).await
    }

    /// Reads answers until one of type `E` for `order_id` has arrived, and returns it.
    pub async fn answer<E: Event>(&mut self, order_id: &str) -> Envelope {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self.seen.iter().find(|e| e.stream_id == order_id && e.is::<E>()) {
                return found.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {} for {order_id} within {PATIENCE:?}; answers so far: {:?}",
                E::TYPE,
                self.answer_types(order_id)
            );
            self.read_answers(Duration::from_millis(200)).await;
        }
    }

    /// The answer of type `E` for `order_id`, decoded; waits for it like [`Self::answer`].
    pub async fn decoded<E: Event>(&mut self, order_id: &str) -> E {
        let envelope = self.answer::<E>(order_id).await;
        envelope.decode().expect("an answer of its own type")
    }

    /// Waits for the `PaymentFailed` answer for `order_id` and checks it gives `reason`.
    pub async fn failed_with(&mut self, order_id: &str, reason: PaymentFailure) {
        let failed: PaymentFailed = self.decoded(order_id).await;
        assert_eq!(failed.reason, reason, "why the charge of {order_id} failed");
    }

    /// The charges the provider holds under `order_id`'s idempotency key.
    pub async fn charges_for(&self, order_id: &str) -> Vec<Value> {
        self.sandbox.charges(&idempotency_key(order_id)).await
    }

    /// Sends a `tok_late` charge for `order_id` and waits until the provider holds it, pending.
    pub async fn charge_late(&mut self, order_id: &str) {
        self.charge(order_id, "cust-1", "tok_late").await;
        eventually(PATIENCE, "the provider to hold a pending charge", || async {
            let charges = self.charges_for(order_id).await;
            charges
                .first()
                .is_some_and(|c| c["status"] == "pending")
                .then_some(())
        })
        .await;
    }

    /// Every answer about `order_id` so far, after reading what is still on its way (a short
    /// fetch that comes back empty: the outbox rows of the test's assertions are committed).
    pub async fn answers(&mut self, order_id: &str) -> Vec<String> {
        self.read_answers(Duration::from_millis(500)).await;
        self.answer_types(order_id)
    }

    fn answer_types(&self, order_id: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|e| e.stream_id == order_id)
            .map(|e| e.event_type.clone())
            .collect()
    }

    async fn read_answers(&mut self, wait: Duration) {
        let batch = self.answers.fetch(32, wait).await.expect("fetch answers");
        for delivery in batch {
            let envelope = delivery.envelope.clone();
            delivery.ack().await.expect("ack an answer");
            // The bus delivers at least once; the saga's inbox would drop a redelivery by id.
            if !self.seen.iter().any(|e| e.id == envelope.id) {
                self.seen.push(envelope);
            }
        }
    }

    /// The order's payment row.
    pub async fn payment(&self, order_id: &str) -> Option<Payment> {
        store::find(&self.db, order_id).await.expect("read the payment")
    }

    /// The order's logged provider calls as `(step, attempt, outcome)`, oldest first.
    pub async fn attempt_log(&self, order_id: &str) -> Vec<(String, i64, String)> {
        let log = store::attempts(&self.db, order_id)
            .await
            .expect("read the attempts");
        log.into_iter().map(|a| (a.step, a.attempt, a.outcome)).collect()
    }

    /// Waits until the order's payment satisfies `check`, and returns it.
    pub async fn payment_until(
        &self,
        order_id: &str,
        what: &str,
        check: impl Fn(&Payment) -> bool,
    ) -> Payment {
        eventually(PATIENCE, what, || async {
            self.payment(order_id).await.filter(|p| check(p))
        })
        .await
    }

    /// How many of the saga's commands the service's inbox has handled.
    pub async fn commands_handled(&self) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM inbox_processed WHERE subscriber = $1")
            .bind(mercato_payments::CONSUMER_GROUP)
            .fetch_one(self.db.pool())
            .await
            .expect("count handled commands")
            .get::<i64, _>("n")
    }

    /// Waits until the inbox has handled `count` commands.
    pub async fn until_handled(&self, count: i64) {
        let what = format!("{count} commands to be handled");
        eventually(PATIENCE, &what, || async {
            (self.commands_handled().await == count).then_some(())
        })
        .await;
    }

    /// The types of the events the service wrote to its outbox for `order_id`, in order.
    pub async fn outbox(&self, order_id: &str) -> Vec<String> {
        mercato_testkit::outbox::event_types(&self.db, order_id).await
    }

    /// `GET /api/payments/{order_id}` as `token`'s bearer (anonymously when `None`).
    pub async fn get_payment(&self, order_id: &str, token: Option<&str>) -> reqwest::Response {
        self.get(&format!("/api/payments/{order_id}"), token).await
    }

    /// `GET path`, with `token` as the bearer when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("payments answers")
    }
}

/// The saga's charge command for an order.
pub fn charge_command(order_id: &str, customer_id: &str, card: &str) -> ChargePayment {
    ChargePayment {
        order_id: order_id.to_owned(),
        customer_id: customer_id.to_owned(),
        amount: amount(),
        card_token: card.to_owned(),
        idempotency_key: idempotency_key(order_id),
    }
}

/// The key the saga derives from the order id.
pub fn idempotency_key(order_id: &str) -> String {
    format!("order-{order_id}-payment")
}

/// A fresh order id.
pub fn order_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl TestApp {
    /// The base URL of every running instance: the first, then each replica.
    pub fn instance_urls(&self) -> Vec<String> {
        self.running
            .iter()
            .chain(&self.replicas)
            .map(|running| format!("http://{}", running.addr))
            .collect()
    }

    /// The Prometheus text of the instance at `base`; `None` while it does not answer.
    pub async fn metrics_at(&self, base: &str) -> Option<String> {
        let response = self.http.get(format!("{base}/metrics")).send().await.ok()?;
        response.text().await.ok()
    }
}
