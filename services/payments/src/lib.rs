//! The payments service: charges and refunds for the checkout saga, idempotent and crash-safe,
//! and the payment sandbox it talks to in development and fault tests.
//!
//! The saga's `ChargePayment` and `RefundPayment` commands (category `orders`) arrive through
//! the inbox, which only records them in the `payments` table. A background worker claims due
//! payments with a lease, calls the provider outside any transaction (same idempotency key on
//! every attempt, so retries and restarts never charge twice), and commits each state change
//! with its answer in the outbox: `PaymentCaptured`, `PaymentFailed`, `PaymentRefunded`
//! (category `payments`, stream = the order id).
//!
//! - `domain/`: the charge intent, the statuses and the retry rule, backoff (no I/O).
//! - `events`: the command handler and the answers it leads to.
//! - `store`: the SQL, with the lease that fences the worker's writes.
//! - `worker`: claims, provider calls, recording the answers.
//! - `provider`: the HTTP adapter to the provider and its error classification.
//! - `metrics`: charge outcomes, refunds, provider calls and their latency.
//! - `api/`: `GET /api/payments/{order_id}` for the order's customer, and the one error mapping.
//! - `sandbox/`: the Stripe-like test provider, served on its own (`payment-sandbox`).
#![forbid(unsafe_code)]

mod api;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod provider;
pub mod sandbox;
pub mod store;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mercato_messaging::{
    Bus, BusError, ConsumerMetrics, ConsumerSpec, Inbox, InboxConfig, Outbox, Relay, RelayConfig,
    RelayMetrics,
};
use mercato_runtime::{Background, ClientConfig, ClientMetrics, HttpConfig, Registry, Server, Service};
use mercato_security::VerifierConfig;
use mercato_storage::{DatabaseConfig, Db, StorageError};
use tokio::sync::Notify;

pub use provider::{ProviderClient, ProviderConfig, ProviderError};

/// The service's name on the wire, in logs and metrics, and its bus category.
pub const NAME: &str = mercato_contracts::payments::CATEGORY;

/// The consumer group that reads the saga's commands.
pub const CONSUMER_GROUP: &str = "payments-on-orders";

/// Everything payments needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: VerifierConfig,
    /// Where identity publishes its keys.
    pub jwks_url: String,
    pub relay: RelayConfig,
    pub inbox: InboxConfig,
    pub provider: ProviderConfig,
    /// The guards of the provider calls (`[client]`): its breaker's judgement and the
    /// connection pool; timeout, concurrency and retries come from `provider`.
    pub client: ClientConfig,
    /// How often the worker looks for due payments when nothing woke it (retries come due
    /// this way).
    pub worker_poll_ms: u64,
}

impl Config {
    /// The first setting that cannot work, with its key.
    #[must_use]
    pub fn invalid_setting(&self) -> Option<(String, String)> {
        if let Some((key, reason)) = self.http.invalid_setting() {
            return Some((format!("http.{key}"), reason));
        }
        if let Some((key, reason)) = self.provider.invalid_setting() {
            return Some((format!("provider.{key}"), reason));
        }
        if self.worker_poll_ms == 0 {
            return Some(("worker_poll_ms".into(), "must be greater than 0".into()));
        }
        None
    }
}

/// Why payments could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("payments setting {key}: {reason}")]
    Config { key: String, reason: String },
    #[error("payments database: {0}")]
    Storage(#[from] StorageError),
    #[error("payments event bus: {0}")]
    Bus(#[from] BusError),
    #[error("payments provider: {0}")]
    Provider(#[from] ProviderError),
    #[error("payments cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Connects to the database and applies payments' migrations.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn open_database(config: &DatabaseConfig) -> Result<Db, StorageError> {
    mercato_storage::open(config, NAME, store::MIGRATIONS).await
}

pub use mercato_runtime::App;

/// Opens the database, binds the listener, and prepares the relay, the inbox and the worker.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    if let Some((key, reason)) = config.invalid_setting() {
        return Err(StartError::Config { key, reason });
    }
    let db = open_database(&config.database).await?;
    let outbox = Outbox::new();
    let wake_worker = Arc::new(Notify::new());
    let verifier = mercato_runtime::auth::jwks_verifier(config.auth.clone(), &config.jwks_url);

    let mut registry = Registry::default();
    let provider = ProviderClient::new(
        &config.provider,
        &config.client,
        &ClientMetrics::register(&mut registry),
    )?;
    let relay = Relay::new(
        db.clone(),
        bus.clone(),
        outbox.clone(),
        config.relay.clone(),
        RelayMetrics::register(&mut registry),
    );
    let inbox = Inbox::new(
        db.clone(),
        bus.clone(),
        ConsumerSpec {
            group: CONSUMER_GROUP.into(),
            category: mercato_contracts::orders::CATEGORY.into(),
        },
        events::OnOrderCommand {
            wake: Arc::clone(&wake_worker),
        },
        config.inbox.clone(),
        ConsumerMetrics::register(&mut registry),
    );
    let worker = worker::Worker::new(
        db.clone(),
        outbox,
        provider,
        config.provider.clone(),
        Duration::from_millis(config.worker_poll_ms),
        wake_worker,
        metrics::PaymentMetrics::register(&mut registry),
    );

    let readiness = mercato_messaging::health::readiness(&db, &bus);
    let service = Service {
        name: NAME,
        routes: api::router(db.clone(), verifier),
        readiness,
        registry,
        own_fallback: false,
    };
    let server = Server::bind(config.listen, &config.http, service)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;

    let mut background = Background::new();
    background.add("outbox relay", move |token| relay.run(token));
    background.add("inbox: orders", move |token| inbox.run(token));
    background.add("payment worker", move |token| worker.run(token));
    let grace = Duration::from_millis(config.http.shutdown_grace_ms);
    Ok(App::new(server, background, grace).close_on_stop(async move { db.close().await }))
}
