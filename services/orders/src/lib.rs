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
//! - `saga`: the answer handler and the step timer.
//! - `directory`: gRPC calls to inventory (prices) and customers (the customer) at placement.
//! - `lookups`: those calls behind caches kept current by inventory's and customers' events.
//! - `projection`, `store`: the order read model and its SQL.
//! - `api/`: the routes and the one error mapping.
#![forbid(unsafe_code)]

mod api;
pub mod checkout;
pub mod directory;
pub mod domain;
pub mod events;
pub mod lookups;
pub mod projection;
pub mod saga;
pub mod store;

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
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use checkout::{Checkout, OrderError};
pub use mercato_cache::CacheConfig;

/// The service's name on the wire, in logs and metrics, and its bus category.
pub const NAME: &str = mercato_contracts::orders::CATEGORY;

/// The projections this service keeps, by name.
pub const PROJECTIONS: &[&str] = &[projection::NAME];

/// The saga's timing (`[orders]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SagaConfig {
    /// How long inventory holds stock for a pending order; longer than the saga's steps.
    pub reservation_ttl_ms: u64,
    /// How long the saga waits for inventory before cancelling.
    pub reserve_timeout_ms: u64,
    /// How long the saga waits for the charge before cancelling and refunding a late one.
    pub payment_timeout_ms: u64,
    pub timer_poll_ms: u64,
    /// Deadline of each gRPC call at order placement.
    pub grpc_timeout_ms: u64,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            reservation_ttl_ms: 120_000,
            reserve_timeout_ms: 30_000,
            payment_timeout_ms: 5_000,
            timer_poll_ms: 250,
            grpc_timeout_ms: 2_000,
        }
    }
}

impl SagaConfig {
    /// The first setting that cannot work, with its key.
    #[must_use]
    pub fn invalid_setting(&self) -> Option<(&'static str, String)> {
        if self.reservation_ttl_ms <= self.reserve_timeout_ms + self.payment_timeout_ms {
            return Some((
                "reservation_ttl_ms",
                "must be longer than reserve_timeout_ms + payment_timeout_ms, or stock could expire mid-checkout".into(),
            ));
        }
        if self.timer_poll_ms == 0 || self.grpc_timeout_ms == 0 {
            return Some((
                "timer_poll_ms",
                "timer_poll_ms and grpc_timeout_ms must be greater than 0".into(),
            ));
        }
        None
    }
}

/// Everything orders needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: VerifierConfig,
    pub jwks_url: String,
    pub relay: RelayConfig,
    pub inbox: InboxConfig,
    pub saga: SagaConfig,
    /// Where inventory's and customers' gRPC APIs answer.
    pub inventory_url: String,
    pub customers_url: String,
    pub projection_poll_ms: u64,
    /// The caches of the customer and product lookups (`[cache]`).
    pub cache: CacheConfig,
    /// The guards of the calls to inventory and customers (`[client]`); each attempt is bounded
    /// by `saga.grpc_timeout_ms` instead of the client's own timeout.
    pub client: ClientConfig,
}

/// Why orders could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("orders database: {0}")]
    Storage(#[from] StorageError),
    #[error("orders event bus: {0}")]
    Bus(#[from] BusError),
    #[error("orders dependencies: {0}")]
    Directory(#[from] directory::DirectoryError),
    #[error("orders caches: {0}")]
    Cache(#[from] mercato_cache::CacheError),
    #[error("orders cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a projection could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("orders has no projection {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Failed(#[from] mercato_eventstore::SubscriptionError),
}

/// Connects to the database and applies orders' migrations.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn open_database(config: &DatabaseConfig) -> Result<Db, StorageError> {
    mercato_storage::open(config, NAME, store::MIGRATIONS).await
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
    if name != projection::NAME {
        return Err(RebuildError::Unknown(name.to_owned()));
    }
    Ok(mercato_eventstore::rebuild(db, &views(saga)).await?)
}

pub use mercato_runtime::App;

/// Opens the database, binds the listener, and prepares the relay, the saga and the projection.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    let db = open_database(&config.database).await?;
    let outbox = Outbox::new();
    let wake_projection = Arc::new(Notify::new());
    let views = views(&config.saga);
    let timing = checkout::Timing {
        reservation_ttl: Duration::from_millis(config.saga.reservation_ttl_ms),
    };
    let checkout = Arc::new(Checkout::new(
        db.clone(),
        outbox.clone(),
        views,
        Arc::clone(&wake_projection),
        timing,
    ));
    let verifier = mercato_runtime::auth::jwks_verifier(config.auth.clone(), &config.jwks_url);

    let mut registry = Registry::default();
    let calls = ClientConfig {
        timeout_ms: config.saga.grpc_timeout_ms,
        ..config.client.clone()
    };
    let directory = directory::Directory::new(
        &config.inventory_url,
        &config.customers_url,
        &calls,
        &ClientMetrics::register(&mut registry),
    )?;
    let lookups = lookups::Lookups::new(
        directory,
        &config.cache,
        &mercato_cache::CacheMetrics::register(&mut registry),
    )?;
    let relay = Relay::new(
        db.clone(),
        bus.clone(),
        outbox,
        config.relay.clone(),
        RelayMetrics::register(&mut registry),
    );
    let consumer_metrics = ConsumerMetrics::register(&mut registry);
    let answers = |category: &str| {
        Inbox::new(
            db.clone(),
            bus.clone(),
            ConsumerSpec {
                group: format!("orders-on-{category}"),
                category: category.to_owned(),
            },
            saga::OnAnswers {
                checkout: Arc::clone(&checkout),
            },
            config.inbox.clone(),
            consumer_metrics.clone(),
        )
    };
    let on_inventory = answers(mercato_contracts::inventory::CATEGORY);
    let on_payments = answers(mercato_contracts::payments::CATEGORY);

    let readiness = mercato_messaging::health::readiness(&db, &bus);
    let state = api::State {
        checkout: Arc::clone(&checkout),
        lookups: lookups.clone(),
    };
    let service = Service {
        name: NAME,
        routes: api::router(state, verifier),
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
    background.add("inbox: inventory", move |token| on_inventory.run(token));
    background.add("inbox: payments", move |token| on_payments.run(token));
    let [on_customers, on_products] = lookups.invalidators();
    let (customers_bus, products_bus) = (bus.clone(), bus.clone());
    background.add("cache: customers", move |token| {
        on_customers.run(customers_bus, token)
    });
    background.add("cache: products", move |token| {
        on_products.run(products_bus, token)
    });
    let every = Duration::from_millis(config.saga.timer_poll_ms);
    let timer_checkout = Arc::clone(&checkout);
    background.add("saga timer", move |token| {
        saga::run_timer(timer_checkout, every, token)
    });
    let projection_db = db.clone();
    let poll = Duration::from_millis(config.projection_poll_ms);
    background.add("projection: orders.views", move |token| {
        mercato_eventstore::run(projection_db, views, wake_projection, poll, token)
    });
    let grace = Duration::from_millis(config.http.shutdown_grace_ms);
    Ok(App::new(server, background, grace).close_on_stop(async move { db.close().await }))
}
