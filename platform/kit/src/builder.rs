//! Start-up every service repeats, in one place: check the settings, open and migrate the
//! database, wire the relay, inboxes, projections and workers, then bind and serve.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use mercato_eventstore::Projection;
use mercato_messaging::{Bus, ConsumerMetrics, ConsumerSpec, Handler, Inbox, Outbox, Relay, RelayMetrics};
use mercato_runtime::settings::Validate;
use mercato_runtime::{App, Background, CancellationToken, Registry, Server, Service};
use mercato_security::Verifier;
use mercato_storage::Db;
use mercato_storage::Migration;
use tokio::sync::Notify;

use crate::error::StartError;
use crate::settings::ServiceSettings;

/// A service being assembled: its open database, its bus, its metrics registry and the loops
/// it will run beside its server.
pub struct ServiceBuilder {
    name: &'static str,
    settings: ServiceSettings,
    db: Db,
    bus: Bus,
    outbox: Outbox,
    registry: Registry,
    background: Background,
    consumer_metrics: Option<ConsumerMetrics>,
    /// The consumer groups this service runs, whose dead letters it answers for.
    groups: Vec<&'static str>,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .field("background", &self.background)
            .finish_non_exhaustive()
    }
}

impl ServiceBuilder {
    /// Checks `config` (the service's whole configuration), then connects to the database of
    /// `settings` and applies `migrations`.
    ///
    /// # Errors
    /// [`StartError::Setting`] for a setting that cannot work, [`StartError::Storage`] when the
    /// database cannot be reached or a migration fails.
    pub async fn open(
        name: &'static str,
        config: &impl Validate,
        settings: &ServiceSettings,
        migrations: &[Migration],
        bus: Bus,
    ) -> Result<Self, StartError> {
        config.validate().map_err(|source| StartError::Setting {
            service: name,
            source,
        })?;
        let db = open_database(name, &settings.database, migrations).await?;
        Ok(Self {
            name,
            settings: settings.clone(),
            db,
            bus,
            outbox: Outbox::new(),
            registry: Registry::default(),
            background: Background::new(),
            consumer_metrics: None,
            groups: Vec::new(),
        })
    }

    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    #[must_use]
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The outbox the relay drains: hand it to whatever writes events.
    #[must_use]
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// Where the service's own metrics register; served at `/metrics`.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// A verifier of callers' tokens against identity's published keys.
    #[must_use]
    pub fn verifier(&self) -> Verifier {
        mercato_runtime::auth::jwks_verifier(self.settings.auth.clone(), &self.settings.jwks_url)
    }

    /// Publishes what the service writes to its outbox.
    pub fn relay(&mut self) {
        let relay = Relay::new(
            self.db.clone(),
            self.bus.clone(),
            self.outbox.clone(),
            self.settings.relay.clone(),
            RelayMetrics::register(&mut self.registry),
        );
        self.background.add("outbox relay", move |token| relay.run(token));
    }

    /// Applies the events of `category` to `handler`, once each, as consumer group `group`.
    pub fn inbox<H: Handler>(&mut self, group: &'static str, category: &str, handler: H) {
        self.groups.push(group);
        let metrics = self
            .consumer_metrics
            .get_or_insert_with(|| ConsumerMetrics::register(&mut self.registry))
            .clone();
        let spec = ConsumerSpec {
            group: group.into(),
            category: category.into(),
            event_types: Vec::new(),
        };
        let inbox = Inbox::new(
            self.db.clone(),
            self.bus.clone(),
            spec,
            handler,
            self.settings.inbox.clone(),
            metrics,
        );
        self.background.add(group, move |token| inbox.run(token));
    }

    /// Keeps `projection` up to date: woken by `wake` after a local append, and every `poll`
    /// for appends of other replicas.
    pub fn projection<P: Projection + 'static>(
        &mut self,
        task: &'static str,
        projection: P,
        wake: Arc<Notify>,
        poll: Duration,
    ) {
        let db = self.db.clone();
        self.background.add(task, move |token| {
            mercato_eventstore::run(db, projection, wake, poll, token)
        });
    }

    /// Runs `work` beside the server until the service stops.
    pub fn background<F, Fut>(&mut self, task: &'static str, work: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background.add(task, work);
    }

    /// Binds the listener and serves `routes` (HTTP, and gRPC routes merged into them), with
    /// readiness checks of the database and the bus; the database closes when the service stops.
    ///
    /// # Errors
    /// [`StartError::Bind`] when the address cannot be bound.
    pub async fn serve(self, routes: Router) -> Result<App, StartError> {
        let Self {
            name,
            settings,
            db,
            bus,
            registry,
            background,
            groups,
            ..
        } = self;
        let verifier = mercato_runtime::auth::jwks_verifier(settings.auth.clone(), &settings.jwks_url);
        let routes = routes
            .merge(crate::dead_letters::routes(bus.clone(), groups, verifier.clone()))
            .merge(mercato_runtime::trace::endpoint::routes(verifier));
        let service = Service {
            name,
            routes,
            readiness: mercato_messaging::health::readiness(&db, &bus),
            registry,
            own_fallback: false,
        };
        let server = Server::bind(settings.listen, &settings.http, service)
            .await
            .map_err(|source| StartError::Bind {
                service: name,
                addr: settings.listen,
                source,
            })?;
        let grace = Duration::from_millis(settings.http.shutdown_grace_ms);
        Ok(App::new(server, background, grace).close_on_stop(async move { db.close().await }))
    }
}

/// Connects to a service's database and applies its migrations (the CLI's `migrate`, and tools
/// that work on a service's data while it is stopped).
///
/// # Errors
/// [`StartError::Storage`] when the database cannot be reached or a migration fails.
pub async fn open_database(
    name: &'static str,
    database: &mercato_storage::DatabaseConfig,
    migrations: &[Migration],
) -> Result<Db, StartError> {
    mercato_storage::open(database, name, migrations)
        .await
        .map_err(|source| StartError::Storage {
            service: name,
            source,
        })
}
