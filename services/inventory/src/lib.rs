//! The inventory service: the product catalogue, stock, and reservations with expiry.
//!
//! Clients read the catalogue (`GET /api/products`, `GET /api/products/{sku}`); admins set stock
//! and prices (`PUT /api/products/{sku}/stock|price`), each change committed with a
//! `ProductChanged` in the outbox. The checkout saga reserves, releases and commits stock with
//! commands on the bus (category `orders`), applied once each through the inbox, and answered
//! through the outbox in the same transaction. A background sweeper releases holds whose time
//! ran out. Orders reads prices and availability over gRPC (`GetProducts`), served on the HTTP
//! listener. `available = on_hand - reserved`, and every stock change is a conditional update,
//! so stock is never oversold on either backend, whatever runs concurrently.
//!
//! - `domain/`: SKU, quantity, money, product and reservation rules (no I/O, no serde).
//! - `store/`: the SQL for products and reservations, and the migrations.
//! - `catalogue`: the catalogue operations (reads, admin changes with their events).
//! - `reservations`: reserve (all or nothing), release, commit, expire, inside a transaction.
//! - `events`: the handler for the saga's commands and the events it answers with.
//! - `expiry`: the sweeper that expires held reservations.
//! - `api/`: the HTTP routes, the gRPC service, page tokens, and the one error mapping.
//! - `demo`: the demo catalogue `mercato up` starts with.
//! - `metrics`: reservations by outcome.
#![forbid(unsafe_code)]

pub mod api;
pub mod catalogue;
mod demo;
pub mod domain;
pub mod events;
pub mod expiry;
pub mod metrics;
pub mod reservations;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mercato_messaging::{
    Bus, BusError, ConsumerMetrics, ConsumerSpec, Inbox, InboxConfig, Outbox, Relay, RelayConfig,
    RelayMetrics,
};
use mercato_runtime::{Background, HttpConfig, Registry, Server, Service};
use mercato_security::VerifierConfig;
use mercato_storage::{DatabaseConfig, Db, StorageError};

pub use catalogue::{Catalogue, CatalogueError};
pub use demo::seed_demo_catalogue;

/// The service's name on the wire, in logs and metrics, and its bus category.
pub const NAME: &str = mercato_contracts::inventory::CATEGORY;

/// The consumer group that applies the saga's stock commands.
pub const ORDERS_CONSUMER: &str = "inventory-on-orders";

/// Everything inventory needs to start.
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
    /// How often expired reservations are looked for and released.
    pub reservation_sweep_ms: u64,
}

/// Why inventory could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("inventory configuration: {0}")]
    Config(String),
    #[error("inventory database: {0}")]
    Storage(#[from] StorageError),
    #[error("inventory event bus: {0}")]
    Bus(#[from] BusError),
    #[error("inventory cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Connects to the database and applies inventory's migrations.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn open_database(config: &DatabaseConfig) -> Result<Db, StorageError> {
    mercato_storage::open(config, NAME, store::MIGRATIONS).await
}

pub use mercato_runtime::App;

/// Opens the database, binds the listener, and prepares the relay, the inbox and the sweeper.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    if config.reservation_sweep_ms == 0 {
        return Err(StartError::Config(
            "inventory.reservation_sweep_ms must be at least 1".into(),
        ));
    }
    let db = open_database(&config.database).await?;
    let outbox = Outbox::new();
    let catalogue = Arc::new(Catalogue::new(db.clone(), outbox.clone()));
    let verifier = mercato_runtime::auth::jwks_verifier(config.auth.clone(), &config.jwks_url);

    let mut registry = Registry::default();
    let reservation_metrics = metrics::ReservationMetrics::register(&mut registry);
    let relay = Relay::new(
        db.clone(),
        bus.clone(),
        outbox.clone(),
        config.relay.clone(),
        RelayMetrics::register(&mut registry),
    );
    let spec = ConsumerSpec {
        group: ORDERS_CONSUMER.into(),
        category: mercato_contracts::orders::CATEGORY.into(),
    };
    let inbox = Inbox::new(
        db.clone(),
        bus.clone(),
        spec,
        events::OnOrderCommands::new(outbox.clone(), reservation_metrics.clone()),
        config.inbox.clone(),
        ConsumerMetrics::register(&mut registry),
    );
    let sweeper = expiry::Sweeper::new(
        db.clone(),
        outbox,
        Duration::from_millis(config.reservation_sweep_ms),
        reservation_metrics,
    );

    let readiness = mercato_messaging::health::readiness(&db, &bus);
    let service = Service {
        name: NAME,
        routes: api::router(catalogue, verifier),
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
    background.add("reservation expiry", move |token| sweeper.run(token));
    let grace = Duration::from_millis(config.http.shutdown_grace_ms);
    Ok(App::new(server, background, grace).close_on_stop(async move { db.close().await }))
}
