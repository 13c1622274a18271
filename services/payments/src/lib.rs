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

pub use api::openapi;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod provider;
pub mod sandbox;
pub mod store;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use mercato_kit::{ServiceBuilder, StartError};
use mercato_messaging::Bus;
use mercato_runtime::settings::{InvalidSetting, Validate, positive, section};
use mercato_runtime::{ClientConfig, ClientMetrics};
use mercato_storage::{DatabaseConfig, Db};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use mercato_runtime::App;
pub use provider::{ProviderClient, ProviderConfig, ProviderError};

/// The service's name on the wire, in logs and metrics, and its bus category.
pub const NAME: &str = mercato_contracts::payments::CATEGORY;

/// The consumer group that reads the saga's commands.
pub const CONSUMER_GROUP: &str = "payments-on-orders";

/// Payments' own settings (`[payments]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// The provider; its `url` is replaced when the sandbox runs in the same process.
    pub provider: ProviderConfig,
    /// How often the worker looks for due payments when nothing woke it (retries come due
    /// this way).
    pub worker_poll_ms: u64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            provider: ProviderConfig::default(),
            worker_poll_ms: 250,
        }
    }
}

impl Validate for PaymentsConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        section("provider", &self.provider)?;
        positive(self.worker_poll_ms, "worker_poll_ms")
    }
}

mercato_kit::service_config! {
    /// Everything payments needs to start.
    pub struct Config {
        pub payments: PaymentsConfig => "payments",
        /// The guards of the provider calls (`[client]`): its breaker's judgement and the
        /// connection pool; timeout, concurrency and retries come from `payments.provider`.
        pub client: ClientConfig => "client",
    }
}

/// Connects to the database and applies payments' migrations.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn open_database(config: &DatabaseConfig) -> Result<Db, StartError> {
    mercato_kit::builder::open_database(NAME, config, store::MIGRATIONS).await
}

/// Opens the database, binds the listener, and prepares the relay, the inbox and the worker.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    let mut kit = ServiceBuilder::open(NAME, config, &config.service, store::MIGRATIONS, bus).await?;
    let wake_worker = Arc::new(Notify::new());
    let client_metrics = ClientMetrics::register(kit.registry());
    let provider = ProviderClient::new(&config.payments.provider, &config.client, &client_metrics)
        .map_err(|e| StartError::dependency(NAME, "provider", e))?;
    kit.relay();
    let handler = events::OnOrderCommand {
        wake: Arc::clone(&wake_worker),
    };
    kit.inbox(CONSUMER_GROUP, mercato_contracts::orders::CATEGORY, handler);
    let worker = worker::Worker::new(
        kit.db().clone(),
        kit.outbox(),
        provider,
        config.payments.provider.clone(),
        Duration::from_millis(config.payments.worker_poll_ms),
        wake_worker,
        metrics::PaymentMetrics::register(kit.registry()),
    );
    kit.background("payment worker", move |token| worker.run(token));
    let routes = api::router(kit.db().clone(), kit.verifier());
    kit.serve(routes).await
}
