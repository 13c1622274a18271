//! The customers service: profiles, addresses and communication preferences.
//!
//! A customer is event-sourced: its stream (id = the user id) holds `CustomerCreated` and
//! `CustomerUpdated`, appended with an expected version; the same transaction writes them to the
//! outbox, from which the relay publishes them. The profile a client reads comes from the
//! `customers.profiles` projection. A customer is created when identity's `UserRegistered`
//! arrives through the inbox.
//!
//! - `domain/`: the aggregate and its rules (no I/O).
//! - `events`: conversions to and from the contracts; the `UserRegistered` handler.
//! - `profiles`: the operations (load, command, append, refresh the read model).
//! - `projection`, `store`: the read model and its SQL.
//! - `api/`: the routes (only ever the caller's own profile) and the one error mapping.
//! - `grpc`: `GetCustomer`, the internal API, on the same listener.
#![forbid(unsafe_code)]

mod api;

pub use api::openapi;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod profiles;
pub mod projection;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use mercato_kit::projections::RebuildError;
use mercato_kit::{ServiceBuilder, StartError};
use mercato_messaging::Bus;
use mercato_runtime::settings::{InvalidSetting, positive};
use mercato_storage::Db;
use tokio::sync::Notify;

pub use mercato_runtime::App;
pub use profiles::{CustomerError, Customers};

/// The service's name on the wire, in logs and metrics, and its bus category.
pub const NAME: &str = mercato_contracts::customers::CATEGORY;

/// The projections this service keeps, by name.
pub const PROJECTIONS: &[&str] = &[projection::NAME];

/// The consumer group that turns registrations into customers.
pub const IDENTITY_CONSUMER: &str = "customers-on-identity";

mercato_kit::service_config! {
    /// Everything customers needs to start.
    pub struct Config {
        /// How often the projection looks for new events when nothing woke it (`[projections]`).
        pub projection_poll_ms: u64,
    }
    check = projection_poll;
}

fn projection_poll(config: &Config) -> Result<(), InvalidSetting> {
    positive(config.projection_poll_ms, "projections.poll_ms")
}

/// Rebuilds the projection `name` from position zero; returns the events applied.
///
/// # Errors
/// An unknown name, or the rebuild failed (the projection is then as it was).
pub async fn rebuild_projection(db: &Db, name: &str) -> Result<u64, RebuildError> {
    mercato_kit::projections::rebuild(db, NAME, &[&projection::ProfilesProjection], name).await
}

/// Opens the database, binds the listener, and prepares the relay, the inbox and the projection.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    let mut kit = ServiceBuilder::open(NAME, config, &config.service, store::MIGRATIONS, bus).await?;
    let wake_projection = Arc::new(Notify::new());
    let customers = Arc::new(Customers::new(
        kit.db().clone(),
        kit.outbox(),
        Arc::clone(&wake_projection),
    ));
    kit.relay();
    let handler = events::OnUserRegistered {
        outbox: kit.outbox(),
        projections: Arc::clone(&wake_projection),
    };
    kit.inbox(IDENTITY_CONSUMER, mercato_contracts::identity::CATEGORY, handler);
    kit.projection(
        "projection: customers.profiles",
        projection::ProfilesProjection,
        wake_projection,
        Duration::from_millis(config.projection_poll_ms),
    );
    let internal = kit.internal(grpc::router(Arc::clone(&customers)));
    let routes = api::router(customers, kit.verifier()).merge(internal);
    kit.serve(routes).await
}
