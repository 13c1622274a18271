//! The orders service: orders, event-sourced, with CQRS read models and the checkout saga.
//!
//! An order's stream records what happened to it and what its saga asked of other services
//! (reserve stock, charge, commit, release, refund); appending to it writes those requests to the
//! outbox in the same transaction. Inventory's and payments' answers come back through the inbox
//! and are decided by the order itself; a timer acts on steps that took too long.
//!
//! - `domain/`: the order and the saga's rules (no I/O).
//! - `events`: facts to and from envelopes (the contracts' types).
//! - `checkout`: the operations (place with an idempotency key, cancel, ship, deliver, react).
//! - `saga`: the answer handler and the step timer (which also recounts the backlog).
//! - `metrics`: orders by outcome, saga phase times, compensations and timeouts, counted once
//!   each decision committed.
//! - `backlog`: orders in flight, and refusing new ones past `max_orders_in_flight`.
//! - `watch`: waking a long poll when its order's read-model row changed.
//! - `directory`: gRPC calls to inventory (prices) and customers (the customer) at placement.
//! - `lookups`: those calls behind caches kept current by inventory's and customers' events.
//! - `projection`, `store`: the order read model and its SQL.
//! - `api/`: the routes and the one error mapping.
#![forbid(unsafe_code)]

mod api;

pub use api::openapi;
pub mod backlog;
pub mod checkout;
pub mod directory;
pub mod domain;
pub mod events;
pub mod in_flight;
pub mod lookups;
pub mod metrics;
pub mod projection;
pub mod saga;
pub mod store;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use mercato_kit::projections::RebuildError;
use mercato_kit::{ServiceBuilder, ServiceSettings, StartError};
use mercato_messaging::Bus;
use mercato_runtime::settings::{InvalidSetting, Validate, ensure, positive, section};
use mercato_runtime::{ClientConfig, ClientMetrics};
use mercato_storage::{DatabaseConfig, Db};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use checkout::{Checkout, OrderError};
pub use mercato_cache::CacheConfig;
pub use mercato_runtime::App;

/// The service's name on the wire, in logs and metrics, and its bus category.
pub const NAME: &str = mercato_contracts::orders::CATEGORY;

/// The projections this service keeps, by name.
pub const PROJECTIONS: &[&str] = &[projection::NAME];

/// Orders that long polls may wait on at once; a poll past it answers at once.
pub const MAX_WATCHED_ORDERS: usize = 10_000;

/// The consumer groups that read inventory's and payments' answers.
pub const INVENTORY_CONSUMER: &str = "orders-on-inventory";
pub const PAYMENTS_CONSUMER: &str = "orders-on-payments";

/// The saga's timing (`[orders]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SagaConfig {
    /// How long inventory holds stock for a pending order; longer than the saga's steps.
    pub reservation_ttl_ms: u64,
    /// How long the saga waits for inventory before cancelling. A business deadline, longer
    /// than redelivery after a crash (see [`SagaConfig::outlasts_redelivery`]).
    pub reserve_timeout_ms: u64,
    /// How long the saga waits for the charge before cancelling and refunding a late one; the
    /// same rule.
    pub payment_timeout_ms: u64,
    /// How often the timer looks for overdue steps and the backlog is counted again.
    pub timer_poll_ms: u64,
    /// Deadline of each gRPC call at order placement.
    pub grpc_timeout_ms: u64,
    /// Orders placed and not yet confirmed or cancelled past which new ones are refused with
    /// `503`: about the saga's throughput times the latency an accepted order may take.
    pub max_orders_in_flight: u64,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            reservation_ttl_ms: 120_000,
            reserve_timeout_ms: 30_000,
            payment_timeout_ms: 20_000,
            timer_poll_ms: 250,
            grpc_timeout_ms: 2_000,
            max_orders_in_flight: 100,
        }
    }
}

impl Validate for SagaConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        ensure(
            self.reservation_ttl_ms > self.reserve_timeout_ms + self.payment_timeout_ms,
            "reservation_ttl_ms",
            "must be longer than reserve_timeout_ms + payment_timeout_ms, or stock could expire mid-checkout",
        )?;
        positive(self.reserve_timeout_ms, "reserve_timeout_ms")?;
        positive(self.payment_timeout_ms, "payment_timeout_ms")?;
        positive(self.timer_poll_ms, "timer_poll_ms")?;
        positive(self.grpc_timeout_ms, "grpc_timeout_ms")?;
        positive(self.max_orders_in_flight, "max_orders_in_flight")
    }
}

impl SagaConfig {
    /// The shortest step deadline a crash cannot outrun: a step is a command and its answer, and
    /// each may wait out one ack wait (its holder died) and the inbox's first retry; one more
    /// ack wait is left for the step's own work.
    #[must_use]
    pub fn shortest_step_ms(ack_wait_ms: u64, first_backoff_ms: u64) -> u64 {
        ack_wait_ms.saturating_mul(3).saturating_add(first_backoff_ms)
    }

    /// Refuses step deadlines that redelivery could outlast, so a restart delays orders and
    /// never cancels them. Checked where the bus and inbox settings are known too: the whole
    /// configuration (`mercato`'s `Config`).
    ///
    /// # Errors
    /// The first of `reserve_timeout_ms` and `payment_timeout_ms` shorter than
    /// [`SagaConfig::shortest_step_ms`].
    pub fn outlasts_redelivery(&self, ack_wait_ms: u64, first_backoff_ms: u64) -> Result<(), InvalidSetting> {
        let shortest = Self::shortest_step_ms(ack_wait_ms, first_backoff_ms);
        let reason = format!(
            "must be at least 3 × bus.ack_wait_ms + the first inbox.backoff_ms ({shortest} ms), \
             or a step redelivered after a crash could time out"
        );
        ensure(self.reserve_timeout_ms >= shortest, "reserve_timeout_ms", &reason)?;
        ensure(self.payment_timeout_ms >= shortest, "payment_timeout_ms", &reason)
    }
}

/// Everything orders needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceSettings,
    /// The saga's timing (`[orders]`).
    pub saga: SagaConfig,
    /// Where inventory's and customers' gRPC APIs answer.
    pub inventory_url: String,
    pub customers_url: String,
    /// How often the projection looks for new events when nothing woke it (`[projections]`).
    pub projection_poll_ms: u64,
    /// The caches of the customer and product lookups (`[cache]`).
    pub cache: CacheConfig,
    /// The guards of the calls to inventory and customers (`[client]`); each attempt is bounded
    /// by `orders.grpc_timeout_ms` instead of the client's own timeout.
    pub client: ClientConfig,
}

impl Validate for Config {
    fn validate(&self) -> Result<(), InvalidSetting> {
        section("", &self.service)?;
        section("orders", &self.saga)?;
        positive(self.projection_poll_ms, "projections.poll_ms")?;
        section("cache", &self.cache)?;
        section("client", &self.client)
    }
}

/// Connects to the database and applies orders' migrations.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn open_database(config: &DatabaseConfig) -> Result<Db, StartError> {
    mercato_kit::builder::open_database(NAME, config, store::MIGRATIONS).await
}

fn views(saga: &SagaConfig) -> projection::ViewsProjection {
    projection::ViewsProjection {
        deadlines: projection::Deadlines {
            reserve: Duration::from_millis(saga.reserve_timeout_ms),
            payment: Duration::from_millis(saga.payment_timeout_ms),
        },
    }
}

/// Rebuilds the projection `name` from position zero; returns the events applied.
///
/// # Errors
/// An unknown name, or the rebuild failed.
pub async fn rebuild_projection(db: &Db, saga: &SagaConfig, name: &str) -> Result<u64, RebuildError> {
    mercato_kit::projections::rebuild(db, NAME, &[&views(saga)], name).await
}

/// Opens the database, binds the listener, and prepares the relay, the saga and the projection.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    let mut kit = ServiceBuilder::open(NAME, config, &config.service, store::MIGRATIONS, bus).await?;
    let wake_projection = Arc::new(Notify::new());
    let changes = watch::Changes::new(MAX_WATCHED_ORDERS, kit.registry());
    // Appends write the rows; the runner, woken after each commit, moves past the same events
    // and wakes the long polls of the orders they belong to once the change is visible.
    let views = Arc::new(watch::Announcing::new(views(&config.saga), Arc::clone(&changes)));
    let timing = checkout::Timing {
        reservation_ttl: Duration::from_millis(config.saga.reservation_ttl_ms),
    };
    let saga_metrics = metrics::SagaMetrics::register(kit.registry());
    let checkout = Arc::new(
        Checkout::new(
            kit.db().clone(),
            kit.outbox(),
            crate::views(&config.saga),
            Arc::clone(&wake_projection),
            timing,
        )
        .with_metrics(saga_metrics),
    );
    let calls = ClientConfig {
        timeout_ms: config.saga.grpc_timeout_ms,
        ..config.client.clone()
    };
    let client_metrics = ClientMetrics::register(kit.registry());
    let tokens = kit.service_tokens()?;
    let tls = directory::DirectoryTls {
        inventory: kit.client_tls("inventory")?,
        customers: kit.client_tls("customers")?,
    };
    let directory = directory::Directory::new(
        &config.inventory_url,
        &config.customers_url,
        &calls,
        &client_metrics,
        tokens.as_ref(),
        &tls,
    )
    .map_err(|e| StartError::dependency(NAME, "dependencies", e))?;
    let cache_metrics = mercato_cache::CacheMetrics::register(kit.registry());
    let lookups = lookups::Lookups::new(directory, &config.cache, &cache_metrics)
        .map_err(|e| StartError::dependency(NAME, "caches", e))?;
    kit.relay();
    for (group, category) in [
        (INVENTORY_CONSUMER, mercato_contracts::inventory::CATEGORY),
        (PAYMENTS_CONSUMER, mercato_contracts::payments::CATEGORY),
    ] {
        let handler = saga::OnAnswers::new(Arc::clone(&checkout));
        kit.inbox(group, category, handler);
    }
    let [on_customers, on_products] = lookups.invalidators();
    let (customers_bus, products_bus) = (kit.bus().clone(), kit.bus().clone());
    kit.background("cache: customers", move |token| {
        on_customers.run(customers_bus, token)
    });
    kit.background("cache: products", move |token| {
        on_products.run(products_bus, token)
    });
    let db = kit.db().clone();
    let backlog = backlog::Backlog::new(db, config.saga.max_orders_in_flight, kit.registry());
    backlog
        .recount()
        .await
        .map_err(|e| StartError::dependency(NAME, "backlog", e))?;
    let every = Duration::from_millis(config.saga.timer_poll_ms);
    let (timer_checkout, timer_backlog) = (Arc::clone(&checkout), Arc::clone(&backlog));
    kit.background("saga timer", move |token| {
        saga::run_timer(timer_checkout, timer_backlog, every, token)
    });
    kit.projection(
        "projection: orders.views",
        views,
        wake_projection,
        Duration::from_millis(config.projection_poll_ms),
    );
    let state = api::State {
        checkout,
        lookups,
        backlog,
        changes,
    };
    let routes = api::router(state, kit.verifier());
    kit.serve(routes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut SagaConfig)) -> Option<String> {
        let mut saga = SagaConfig::default();
        change(&mut saga);
        section("orders", &saga).err().map(|e| e.key)
    }

    #[test]
    fn each_saga_setting_is_refused_by_its_own_key() {
        assert_eq!(refused(|_| {}), None);
        assert_eq!(
            refused(|s| s.timer_poll_ms = 0).as_deref(),
            Some("orders.timer_poll_ms")
        );
        assert_eq!(
            refused(|s| s.grpc_timeout_ms = 0).as_deref(),
            Some("orders.grpc_timeout_ms")
        );
        assert_eq!(
            refused(|s| s.max_orders_in_flight = 0).as_deref(),
            Some("orders.max_orders_in_flight")
        );
        assert_eq!(
            refused(|s| s.reservation_ttl_ms = s.reserve_timeout_ms).as_deref(),
            Some("orders.reservation_ttl_ms")
        );
    }

    #[test]
    fn a_step_deadline_must_outlast_three_ack_waits_and_the_first_retry() {
        let saga = SagaConfig {
            reserve_timeout_ms: 15_200,
            payment_timeout_ms: 15_200,
            ..SagaConfig::default()
        };
        assert_eq!(saga.outlasts_redelivery(5_000, 200), Ok(()));
        let refusal = saga.outlasts_redelivery(5_000, 201).unwrap_err();
        assert_eq!(refusal.key, "reserve_timeout_ms");
        assert!(refusal.reason.contains("15201 ms"), "{}", refusal.reason);
        let short_payment = SagaConfig {
            payment_timeout_ms: 15_199,
            ..saga
        };
        assert_eq!(
            short_payment.outlasts_redelivery(5_000, 200).unwrap_err().key,
            "payment_timeout_ms"
        );
    }
}
