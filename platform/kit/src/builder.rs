//! Start-up every service repeats, in one place: check the settings, open and migrate the
//! database, wire the relay, inboxes, projections and workers, then bind and serve.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use mercato_eventstore::Projection;
use mercato_messaging::{Bus, ConsumerMetrics, ConsumerSpec, Handler, Inbox, Outbox, Relay, RelayMetrics};
use mercato_runtime::service_token::ServiceTokens;
use mercato_runtime::settings::Validate;
use mercato_runtime::tls::{ClientTls, ServerTls};
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
    tls: Option<Tls>,
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
        let tls = Tls::load(name, settings)?;
        let db = open_database(name, &settings.database, migrations).await?;
        let mut registry = Registry::default();
        db.register_metrics(registry.sub_registry_with_label(("database".into(), name.into())));
        if let Some(bus_db) = bus.database() {
            // The embedded bus's file, shared by the services of the process: each service's
            // metrics show the same counters.
            bus_db.register_metrics(registry.sub_registry_with_label(("database".into(), "bus".into())));
        }
        Ok(Self {
            name,
            settings: settings.clone(),
            db,
            bus,
            outbox: Outbox::new(),
            registry,
            background: Background::new(),
            consumer_metrics: None,
            tls,
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
        verifier(&self.settings, self.tls.as_ref())
    }

    /// The TLS of calls to `service`, when `[tls]` is on: this service's certificate, and the
    /// callee's must name `service`. Give it to `ServiceClient::with_tls` or `tls::channel`.
    ///
    /// # Errors
    /// [`StartError::Tls`] when this service's files cannot be used.
    pub fn client_tls(&self, service: &str) -> Result<Option<ClientTls>, StartError> {
        client_tls(self.name, &self.settings, service)
    }

    /// `routes` as an internal API: behind a service-token check when `[service_tokens]` is
    /// enabled (see `mercato_runtime::service_token`), as they are otherwise.
    pub fn internal(&self, routes: Router) -> Router {
        if !self.settings.service_tokens.enabled {
            return routes;
        }
        let verifier = mercato_runtime::auth::service_token_verifier(
            &self.settings.auth,
            self.name,
            &self.settings.jwks_url,
            self.tls.as_ref().map(|t| &*t.identity),
        );
        mercato_runtime::service_token::internal(routes, verifier)
    }

    /// This service's tokens for the services it calls, when `[service_tokens]` is enabled,
    /// fetched over mutual TLS when `[tls]` is on. Its key or secret is read now, so a missing
    /// one or one every user may read stops start-up.
    ///
    /// # Errors
    /// [`StartError::Dependency`] when the credential cannot be read or the client built.
    pub fn service_tokens(&self) -> Result<Option<ServiceTokens>, StartError> {
        let config = &self.settings.service_tokens;
        if !config.enabled {
            return Ok(None);
        }
        let credential = mercato_security::service_token::client_credential(&config.keys_dir, self.name)
            .map_err(|e| StartError::dependency(self.name, "service token credential", e))?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5));
        // With `[tls]` on, identity serves only holders of a certificate from the CA: the token
        // request presents this service's, and accepts only identity's.
        if let Some(tls) = &self.tls {
            http = mercato_runtime::tls::reqwest_builder(http, &tls.identity);
        }
        let http = http
            .build()
            .map_err(|e| StartError::dependency(self.name, "token client", e))?;
        Ok(Some(ServiceTokens::new(
            self.name,
            &self.settings.token_url,
            &self.settings.auth.issuer,
            credential,
            http,
        )))
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
            tls,
            groups,
            ..
        } = self;
        let verifier = verifier(&settings, tls.as_ref());
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
        let server = Server::bind_tls(settings.listen, &settings.http, service, tls.map(|t| t.server))
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

fn client_tls(
    name: &'static str,
    settings: &ServiceSettings,
    service: &str,
) -> Result<Option<ClientTls>, StartError> {
    settings
        .tls
        .files()
        .map(|files| mercato_runtime::tls::client_for(&files, service))
        .transpose()
        .map_err(|source| StartError::Tls {
            service: name,
            source,
        })
}

/// The server's TLS, and the client's for identity's keys, read at start so that unusable
/// files stop start-up rather than the first call.
struct Tls {
    server: ServerTls,
    identity: ClientTls,
}

impl Tls {
    fn load(name: &'static str, settings: &ServiceSettings) -> Result<Option<Self>, StartError> {
        let Some(files) = settings.tls.files() else {
            return Ok(None);
        };
        let error = |source| StartError::Tls {
            service: name,
            source,
        };
        Ok(Some(Self {
            server: ServerTls::new(&files, Arc::new(mercato_contracts::callers::may_call))
                .map_err(error)?
                .with_probe(settings.tls.probe_listen),
            identity: mercato_runtime::tls::client_for(&files, "identity").map_err(error)?,
        }))
    }
}

/// Identity's keys are fetched over mutual TLS when it is on, like any call to identity.
fn verifier(settings: &ServiceSettings, tls: Option<&Tls>) -> Verifier {
    mercato_runtime::auth::jwks_verifier_over(
        settings.auth.clone(),
        &settings.jwks_url,
        tls.map(|t| &*t.identity),
    )
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
