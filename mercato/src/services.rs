//! Starting services: one, several, or all of them in one process (`mercato up`).
//!
//! Even in one process, services only talk over loopback HTTP: the gateway is given the
//! addresses the other services actually bound, never their code.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context as _;
use mercato_messaging::Bus;
use mercato_runtime::CancellationToken;
use tokio::task::JoinSet;

use crate::config::Config;

/// The services the `mercato` binary can run, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum ServiceName {
    Identity,
    Customers,
    Inventory,
    PaymentSandbox,
    Payments,
    Notifications,
    Orders,
    Gateway,
}

impl ServiceName {
    /// Every service, dependencies first.
    pub const ALL: &'static [Self] = &[
        Self::Identity,
        Self::Customers,
        Self::Inventory,
        Self::PaymentSandbox,
        Self::Payments,
        Self::Notifications,
        Self::Orders,
        Self::Gateway,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => mercato_identity::NAME,
            Self::Customers => mercato_customers::NAME,
            Self::Inventory => mercato_inventory::NAME,
            Self::PaymentSandbox => mercato_payments::sandbox::NAME,
            Self::Payments => mercato_payments::NAME,
            Self::Notifications => mercato_notifications::NAME,
            Self::Orders => mercato_orders::NAME,
            Self::Gateway => mercato_gateway::NAME,
        }
    }

    /// Whether the service owns a database.
    #[must_use]
    pub fn has_database(self) -> bool {
        !matches!(self, Self::Gateway | Self::PaymentSandbox)
    }

    /// Whether the service publishes or consumes events.
    #[must_use]
    pub fn uses_bus(self) -> bool {
        !matches!(self, Self::Gateway | Self::PaymentSandbox)
    }

    /// Whether clients reach it through the gateway (the sandbox stands for an outside provider).
    #[must_use]
    pub fn behind_gateway(self) -> bool {
        !matches!(self, Self::Gateway | Self::PaymentSandbox)
    }
}

/// A service that started, as `up` reports it.
#[derive(Debug, Clone)]
pub struct Started {
    pub name: ServiceName,
    pub addr: SocketAddr,
    pub url: String,
    /// The storage backend, for services that own a database.
    pub backend: Option<&'static str>,
}

/// Services running in this process.
#[derive(Debug)]
pub struct Running {
    pub started: Vec<Started>,
    tasks: JoinSet<(ServiceName, std::io::Result<()>)>,
    shutdown: CancellationToken,
}

impl Running {
    /// The URL a started service answers on.
    #[must_use]
    pub fn url(&self, name: ServiceName) -> Option<&str> {
        self.started
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.url.as_str())
    }

    /// Waits until every service has stopped. If one stops on its own (it failed), the others
    /// are told to stop too, and the failure is returned.
    ///
    /// # Errors
    /// The first service that failed.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let (name, result) = joined.context("a service task panicked")?;
            if !self.shutdown.is_cancelled() {
                tracing::error!(
                    service = name.as_str(),
                    "service stopped unexpectedly; stopping the rest"
                );
                self.shutdown.cancel();
            }
            if let Err(e) = result {
                first_error.get_or_insert_with(|| anyhow::anyhow!("{} failed: {e}", name.as_str()));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Asks every service to stop and waits for them.
    ///
    /// # Errors
    /// As [`Running::wait`].
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

fn backend_of(url: &str) -> Option<&'static str> {
    mercato_storage::Backend::of_url(url)
        .ok()
        .map(mercato_storage::Backend::as_str)
}

/// Starts `names` (in dependency order) and returns once every one is listening.
///
/// # Errors
/// A service could not start; the ones already started are stopped.
pub async fn start(
    config: &Config,
    names: &[ServiceName],
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    let mut running = Running {
        started: Vec::new(),
        tasks: JoinSet::new(),
        shutdown: shutdown.clone(),
    };
    // One bus connection for every service of this process.
    let bus = if names.iter().any(|n| n.uses_bus()) {
        let url = mercato_storage::db::redact_url(&config.bus.url);
        Some(
            Bus::connect(&config.bus)
                .await
                .with_context(|| format!("event bus at {url}"))?,
        )
    } else {
        None
    };
    // Where each service can be reached: configured URLs, replaced by bound addresses as
    // services start here.
    let mut urls: BTreeMap<ServiceName, String> = ServiceName::ALL
        .iter()
        .map(|s| (*s, config.endpoint(*s).base_url()))
        .collect();
    for name in names {
        let result = start_one(config, name, &urls, bus.as_ref(), &mut running).await;
        if let Err(e) = result {
            shutdown.cancel();
            while running.tasks.join_next().await.is_some() {}
            return Err(e);
        }
        if let Some(s) = running.started.last() {
            urls.insert(name, s.url.clone());
        }
    }
    Ok(running)
}

async fn start_one(
    config: &Config,
    name: ServiceName,
    urls: &BTreeMap<ServiceName, String>,
    bus: Option<&Bus>,
    running: &mut Running,
) -> anyhow::Result<()> {
    let listen = config.endpoint(name).listen;
    let token = running.shutdown.clone();
    let bus = || bus.cloned().context("the event bus is not connected");
    let backend = backend_of(&config.database_for(name).url).filter(|_| name.has_database());
    let addr = match name {
        ServiceName::Identity => {
            let app = mercato_identity::build(&crate::cli::identity_config(config), bus()?).await?;
            let addr = app.local_addr();
            running
                .tasks
                .spawn(async move { (name, app.run_until_stopped(token).await) });
            addr
        }
        ServiceName::Customers => {
            let identity = &urls[&ServiceName::Identity];
            let app =
                mercato_customers::build(&crate::cli::customers_config(config, identity), bus()?).await?;
            let addr = app.local_addr();
            running
                .tasks
                .spawn(async move { (name, app.run_until_stopped(token).await) });
            addr
        }
        ServiceName::Inventory => {
            let identity = &urls[&ServiceName::Identity];
            let inventory = crate::cli::inventory_config(config, identity);
            if config.inventory.demo_catalogue {
                let db = mercato_inventory::open_database(&inventory.database).await?;
                let added = mercato_inventory::seed_demo_catalogue(&db).await?;
                db.close().await;
                if added > 0 {
                    tracing::info!(products = added, "loaded the demo catalogue");
                }
            }
            let app = mercato_inventory::build(&inventory, bus()?).await?;
            let addr = app.local_addr();
            running
                .tasks
                .spawn(async move { (name, app.run_until_stopped(token).await) });
            addr
        }
        ServiceName::PaymentSandbox => {
            let sandbox = mercato_payments::sandbox::SandboxConfig {
                listen,
                http: config.http.clone(),
                late_delay_ms: config.sandbox.late_delay_ms,
                flaky_failures: config.sandbox.flaky_failures,
                capacity: config.sandbox.capacity,
            };
            let app = mercato_payments::sandbox::build(&sandbox).await?;
            let addr = app.local_addr();
            running
                .tasks
                .spawn(async move { (name, app.run_until_stopped(token).await) });
            addr
        }
        ServiceName::Payments => {
            // A sandbox started in this process is the provider; otherwise the configured one.
            let sandbox = running
                .started
                .iter()
                .find(|s| s.name == ServiceName::PaymentSandbox)
                .map(|s| s.url.clone());
            let payments = crate::cli::payments_config(config, &urls[&ServiceName::Identity], sandbox);
            let app = mercato_payments::build(&payments, bus()?).await?;
            let addr = app.local_addr();
            running
                .tasks
                .spawn(async move { (name, app.run_until_stopped(token).await) });
            addr
        }
        ServiceName::Notifications => {
            let notifications = crate::cli::notifications_config(config, &urls[&ServiceName::Identity]);
            let app = mercato_notifications::build(&notifications, bus()?).await?;
            let addr = app.local_addr();
            running
                .tasks
                .spawn(async move { (name, app.run_until_stopped(token).await) });
            addr
        }
        ServiceName::Orders => {
            let orders = crate::cli::orders_config(config, urls);
            let app = mercato_orders::build(&orders, bus()?).await?;
            let addr = app.local_addr();
            running
                .tasks
                .spawn(async move { (name, app.run_until_stopped(token).await) });
            addr
        }
        ServiceName::Gateway => {
            let identity = urls[&ServiceName::Identity].clone();
            let upstreams = ServiceName::ALL
                .iter()
                .filter(|s| s.behind_gateway())
                .map(|s| (s.as_str().to_owned(), vec![urls[s].clone()]))
                .collect();
            let app = mercato_gateway::build(&mercato_gateway::Config {
                listen,
                http: config.http.clone(),
                client: config.client.clone(),
                gateway: config.gateway.clone(),
                auth: config.auth.clone(),
                jwks_url: format!("{identity}/.well-known/jwks.json"),
                upstreams,
            })
            .await?;
            let addr = app.local_addr();
            running
                .tasks
                .spawn(async move { (name, app.run_until_stopped(token).await) });
            addr
        }
    };
    // A service bound to port 0 is reached at the port it got.
    let url = if listen.port() == 0 {
        format!("http://{addr}")
    } else {
        config.endpoint(name).base_url()
    };
    running.started.push(Started {
        name,
        addr,
        url,
        backend,
    });
    Ok(())
}
