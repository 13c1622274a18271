//! Starting services: one, several, or all of them in one process (`mercato up`).
//!
//! Even in one process, services only talk over loopback HTTP: the gateway is given the
//! addresses the other services actually bound, never their code.

use std::net::SocketAddr;

use anyhow::Context as _;
use mercato_messaging::Bus;
use mercato_runtime::CancellationToken;
use tokio::task::JoinSet;

use std::future::Future;
use std::pin::Pin;

use crate::config::Config;
use crate::names::ServiceName;
use crate::service_config::{self, Urls};

/// A service that started, as `up` reports it.
#[derive(Debug, Clone)]
pub struct Started {
    pub name: ServiceName,
    pub addr: SocketAddr,
    pub url: String,
    /// Where `/health` and `/ready` answer in plaintext beside a TLS port (`[tls] probe_listen`).
    pub probe: Option<SocketAddr>,
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
    ensure_service_keys(config)?;
    // One bus connection for every service of this process.
    let bus = if names.iter().any(|n| n.is_domain_service()) {
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
    let mut urls = service_config::configured_urls(config);
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

/// With service tokens on and key generation allowed (one machine, one data directory), every
/// calling service's key pair is created if missing, before identity or a caller needs it.
fn ensure_service_keys(config: &Config) -> anyhow::Result<()> {
    let tokens = &config.service_tokens;
    if !(tokens.enabled && tokens.generate_keys) {
        return Ok(());
    }
    for caller in tokens.callers() {
        mercato_security::service_token::ensure_client_key(&tokens.keys_dir, caller)
            .with_context(|| format!("the service token key of {caller}"))?;
    }
    Ok(())
}

type Run = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

async fn start_one(
    config: &Config,
    name: ServiceName,
    urls: &Urls,
    bus: Option<&Bus>,
    running: &mut Running,
) -> anyhow::Result<()> {
    let bus = || bus.cloned().context("the event bus is not connected");
    let app = match name {
        ServiceName::Identity => mercato_identity::build(&service_config::identity(config), bus()?).await?,
        ServiceName::Customers => {
            mercato_customers::build(&service_config::customers(config, urls), bus()?).await?
        }
        ServiceName::Inventory => {
            mercato_inventory::build(&service_config::inventory(config, urls), bus()?).await?
        }
        ServiceName::Payments => {
            let sandbox_here = running.url(ServiceName::PaymentSandbox).is_some();
            let payments = service_config::payments(config, urls, sandbox_here);
            mercato_payments::build(&payments, bus()?).await?
        }
        ServiceName::Notifications => {
            mercato_notifications::build(&service_config::notifications(config, urls), bus()?).await?
        }
        ServiceName::Orders => mercato_orders::build(&service_config::orders(config, urls), bus()?).await?,
        ServiceName::PaymentSandbox => {
            let app = mercato_payments::sandbox::build(&service_config::sandbox(config)).await?;
            running.spawn(config, name, app.local_addr(), None, |token| {
                Box::pin(app.run_until_stopped(token))
            });
            return Ok(());
        }
        ServiceName::Gateway => {
            let app = mercato_gateway::build(&service_config::gateway(config, urls)).await?;
            running.spawn(config, name, app.local_addr(), None, |token| {
                Box::pin(app.run_until_stopped(token))
            });
            return Ok(());
        }
    };
    let probe = app.probe_addr();
    running.spawn(config, name, app.local_addr(), probe, |token| {
        Box::pin(app.run_until_stopped(token))
    });
    Ok(())
}

impl Running {
    /// Runs a started service until the shared shutdown, and records where it answers.
    fn spawn(
        &mut self,
        config: &Config,
        name: ServiceName,
        addr: SocketAddr,
        probe: Option<SocketAddr>,
        run: impl FnOnce(CancellationToken) -> Run,
    ) {
        let task = run(self.shutdown.clone());
        self.tasks.spawn(async move { (name, task.await) });
        let listen = config.endpoint(name).listen;
        // A service bound to port 0 is reached at the port it got.
        let url = if listen.port() == 0 {
            config.url_of(name, addr)
        } else {
            config.base_url(name)
        };
        let backend = backend_of(&config.database_for(name).url).filter(|_| name.is_domain_service());
        self.started.push(Started {
            name,
            addr,
            url,
            probe,
            backend,
        });
    }
}
