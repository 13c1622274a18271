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
pub mod domain;
pub mod events;
pub mod grpc;
pub mod profiles;
pub mod projection;
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
use tokio::sync::Notify;

pub use profiles::{CustomerError, Customers};

/// The service's name on the wire, in logs and metrics, and its bus category.
pub const NAME: &str = mercato_contracts::customers::CATEGORY;

/// The projections this service keeps, by name.
pub const PROJECTIONS: &[&str] = &[projection::NAME];

/// Everything customers needs to start.
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
    /// How often the projection looks for new events when nothing woke it.
    pub projection_poll_ms: u64,
}

/// Why customers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("customers database: {0}")]
    Storage(#[from] StorageError),
    #[error("customers event bus: {0}")]
    Bus(#[from] BusError),
    #[error("customers cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Connects to the database and applies customers' migrations.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn open_database(config: &DatabaseConfig) -> Result<Db, StorageError> {
    mercato_storage::open(config, NAME, store::MIGRATIONS).await
}

/// Why a projection could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("customers has no projection {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Failed(#[from] mercato_eventstore::SubscriptionError),
}

/// Rebuilds the projection `name` from position zero; returns the events applied.
///
/// # Errors
/// An unknown name, or the rebuild failed (the projection is then as it was).
pub async fn rebuild_projection(db: &Db, name: &str) -> Result<u64, RebuildError> {
    if name != projection::NAME {
        return Err(RebuildError::Unknown(name.to_owned()));
    }
    Ok(mercato_eventstore::rebuild(db, &projection::ProfilesProjection).await?)
}

pub use mercato_runtime::App;

/// Opens the database, binds the listener, and prepares the relay, the inbox and the projection.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    let db = open_database(&config.database).await?;
    let outbox = Outbox::new();
    let wake_projection = Arc::new(Notify::new());
    let customers = Arc::new(Customers::new(
        db.clone(),
        outbox.clone(),
        Arc::clone(&wake_projection),
    ));
    let verifier = mercato_runtime::auth::jwks_verifier(config.auth.clone(), &config.jwks_url);

    let mut registry = Registry::default();
    let relay = Relay::new(
        db.clone(),
        bus.clone(),
        outbox.clone(),
        config.relay.clone(),
        RelayMetrics::register(&mut registry),
    );
    let handler = events::OnUserRegistered {
        outbox,
        projections: Arc::clone(&wake_projection),
    };
    let spec = ConsumerSpec {
        group: "customers-on-identity".into(),
        category: mercato_contracts::identity::CATEGORY.into(),
    };
    let inbox = Inbox::new(
        db.clone(),
        bus.clone(),
        spec,
        handler,
        config.inbox.clone(),
        ConsumerMetrics::register(&mut registry),
    );

    let readiness = mercato_messaging::health::readiness(&db, &bus);
    let service = Service {
        name: NAME,
        routes: api::router(Arc::clone(&customers), verifier).merge(grpc::router(customers)),
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
    background.add("inbox: identity", move |token| inbox.run(token));
    let projection_db = db.clone();
    let poll = Duration::from_millis(config.projection_poll_ms);
    background.add("projection: customers.profiles", move |token| {
        mercato_eventstore::run(
            projection_db,
            projection::ProfilesProjection,
            wake_projection,
            poll,
            token,
        )
    });
    let grace = Duration::from_millis(config.http.shutdown_grace_ms);
    Ok(App::new(server, background, grace).close_on_stop(async move { db.close().await }))
}
