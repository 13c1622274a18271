//! The service kit: what every Mercato service that owns a database and uses the bus shares,
//! written once, so that a service's `lib.rs` says only what is its own.
//!
//! - [`aggregate`]: [`Aggregate`](aggregate::Aggregate), a state replayed from its stream.
//! - [`settings`]: [`ServiceSettings`], the settings every service has (listen address, HTTP
//!   server, database, token verification, relay, inbox), embedded in each service's config.
//! - [`builder`]: [`ServiceBuilder`] checks the settings, opens and migrates the database, and
//!   collects the relay, the inboxes, projections and workers; [`ServiceBuilder::serve`] binds the
//!   listener (HTTP and gRPC on one port) with readiness checks of the database and the bus.
//! - [`error`]: [`StartError`], the one reason type for a service that could not start.
//! - [`dead_letters`]: the dead letters of the service's own consumer groups, listed and replayed
//!   by an admin (the operations console reaches them here).
//! - [`projections`]: rebuilding a service's projection by name, for the CLI.
//! - [`problems`]: the validation problem of a domain error's refused fields.
//! - [`store`]: [`row_struct!`], a store's row type declared once with its mapping, and the
//!   placeholders of an `IN` list.
//!
//! A new service writes its routes, handlers, migrations and settings, and then:
//!
//! ```ignore
//! let mut kit = ServiceBuilder::open(NAME, config, &config.service, store::MIGRATIONS, bus).await?;
//! kit.relay();
//! kit.inbox("shipping-on-orders", orders::CATEGORY, OnOrderConfirmed::new(kit.outbox()));
//! let routes = api::router(kit.db().clone(), kit.verifier());
//! kit.serve(routes).await
//! ```
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod builder;
pub mod dead_letters;
pub mod error;
pub mod problems;
pub mod projections;
pub mod settings;
pub mod store;

pub use builder::ServiceBuilder;
pub use error::StartError;
pub use settings::ServiceSettings;
