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

pub use api::openapi;
pub mod catalogue;
mod demo;
pub mod domain;
pub mod events;
pub mod expiry;
pub mod metrics;
pub mod reservations;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use mercato_kit::{ServiceBuilder, StartError};
use mercato_messaging::Bus;
use mercato_runtime::settings::{InvalidSetting, Validate, positive};
use serde::{Deserialize, Serialize};

pub use catalogue::{Catalogue, CatalogueError};
pub use demo::seed_demo_catalogue;
pub use mercato_runtime::App;

/// The service's name on the wire, in logs and metrics, and its bus category.
pub const NAME: &str = mercato_contracts::inventory::CATEGORY;

/// The consumer group that applies the saga's stock commands.
pub const ORDERS_CONSUMER: &str = "inventory-on-orders";

/// Inventory's own settings (`[inventory]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// How often expired reservations are looked for and released.
    pub reservation_sweep_ms: u64,
    /// Load the demo catalogue into an empty catalogue at start (`mercato up` turns it on).
    pub demo_catalogue: bool,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            reservation_sweep_ms: 1_000,
            demo_catalogue: false,
        }
    }
}

impl Validate for InventoryConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        positive(self.reservation_sweep_ms, "reservation_sweep_ms")
    }
}

mercato_kit::service_config! {
    /// Everything inventory needs to start.
    pub struct Config {
        pub inventory: InventoryConfig => "inventory",
    }
}

/// Opens the database (loading the demo catalogue into an empty one when asked), binds the
/// listener, and prepares the relay, the inbox and the sweeper.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    let mut kit = ServiceBuilder::open(NAME, config, &config.service, store::MIGRATIONS, bus).await?;
    if config.inventory.demo_catalogue {
        let added = seed_demo_catalogue(kit.db())
            .await
            .map_err(|source| StartError::Storage {
                service: NAME,
                source,
            })?;
        if added > 0 {
            tracing::info!(products = added, "loaded the demo catalogue");
        }
    }
    let catalogue = Arc::new(Catalogue::new(kit.db().clone(), kit.outbox()));
    let reservation_metrics = metrics::ReservationMetrics::register(kit.registry());
    kit.relay();
    let handler = events::OnOrderCommands::new(kit.outbox(), reservation_metrics.clone());
    kit.inbox(ORDERS_CONSUMER, mercato_contracts::orders::CATEGORY, handler);
    let sweeper = expiry::Sweeper::new(
        kit.db().clone(),
        kit.outbox(),
        Duration::from_millis(config.inventory.reservation_sweep_ms),
        reservation_metrics,
    );
    kit.background("reservation expiry", move |token| sweeper.run(token));
    let internal = kit.internal(api::internal_router(Arc::clone(&catalogue)));
    let routes = api::router(catalogue, kit.verifier()).merge(internal);
    kit.serve(routes).await
}
