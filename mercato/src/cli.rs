//! The subcommands of `mercato`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mercato_runtime::CancellationToken;

use crate::config::{self, Config, Sources};
use crate::names::ServiceName;
use crate::service_config;
use crate::services::{self, Running};

/// Mercato: a commerce backend of Rust microservices.
#[derive(Debug, Parser)]
#[command(name = "mercato", version, about)]
pub struct Cli {
    /// Configuration file (default: ./mercato.toml when it exists).
    #[arg(long, global = true, env = "MERCATO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory for embedded mode (default: ./.mercato).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and every service in this process (embedded: SQLite, no servers needed).
    Up {
        /// Do not load the demo catalogue into an empty catalogue.
        #[arg(long)]
        no_seed: bool,
    },
    /// Drive checkouts through the public API at a constant arrival rate and report latency.
    Loadgen(crate::loadgen::LoadgenArgs),
    /// Run one service alone (distributed mode).
    Serve {
        #[arg(value_enum)]
        service: ServiceName,
    },
    /// Apply database migrations, then exit.
    Migrate {
        /// Services to migrate (default: all that own a database).
        #[arg(value_enum)]
        services: Vec<ServiceName>,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Write the public OpenAPI document the gateway serves, generated from the handlers.
    Openapi(crate::openapi::OpenApiArgs),
    /// Write the event schemas and the consumers' pacts under `contracts/`, rendered from the code.
    Contracts {
        /// The `contracts/` directory of the source tree.
        #[arg(long, default_value = "contracts")]
        dir: PathBuf,
        /// Write nothing; fail if a file differs from its rendering.
        #[arg(long)]
        check: bool,
    },
    /// Manage the identity service's signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Operator tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Messages parked after their handler kept failing.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Read models built from the event store.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Blue/green deployments through the gateway's admin API.
    Deploy {
        #[command(subcommand)]
        command: DeployCommand,
    },
    /// Render the Kubernetes manifests (a kustomize base and overlays) from the configuration.
    K8s(crate::k8s::K8sArgs),
    /// Render least-privilege users: a NATS authorization block, a Redis ACL file.
    Access(crate::access::AccessArgs),
    /// A local certificate authority: `init`, then `issue SERVICE` for each service.
    Certs {
        #[command(subcommand)]
        command: crate::certs::CertsCommand,
    },
    /// Print an order's trace as a waterfall, gathered from every service's recent spans. Needs
    /// an admin: MERCATO_ADMIN_TOKEN, or MERCATO_ADMIN_EMAIL with MERCATO_ADMIN_PASSWORD.
    Trace {
        /// The order's id.
        order_id: String,
        /// A service's base URL to ask, repeatable (default: every configured service).
        #[arg(long = "url")]
        urls: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Check the target group (readiness and smoke request), move all traffic to it, watch its
    /// error rate and move back on its own if it rises. Needs an admin: MERCATO_ADMIN_TOKEN, or
    /// MERCATO_ADMIN_EMAIL with MERCATO_ADMIN_PASSWORD (or a prompt).
    Switch(SwitchArgs),
}

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// The group to switch to.
    #[arg(long, value_enum)]
    pub to: GroupArg,
    /// The upstream (service) to switch, as the gateway names it.
    #[arg(long)]
    pub upstream: String,
    /// The gateway's base URL (default: the configured gateway address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// How long the new group is watched after the switch.
    #[arg(long, default_value_t = 30)]
    pub watch_secs: u64,
    /// Failed requests, in percent, above which the switch is undone.
    #[arg(long, default_value_t = 5.0)]
    pub max_error_percent: f64,
    /// No verdict on fewer requests than this.
    #[arg(long, default_value_t = 20)]
    pub min_requests: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GroupArg {
    Blue,
    Green,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List parked messages, oldest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Deliver a parked message to its consumer group again.
    Replay { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// The projections there are.
    List,
    /// Empty a projection and rebuild it from the first event.
    Rebuild { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new signing key; older keys stay published until their tokens expire.
    Rotate,
    /// List the published keys, newest (active) first.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account, or make an existing account an admin. The password comes from
    /// MERCATO_ADMIN_PASSWORD or a prompt.
    Create {
        #[arg(long)]
        email: String,
    },
}

impl Cli {
    /// Runs the command.
    ///
    /// # Errors
    /// Whatever stopped the command, for the binary to print.
    pub async fn run(self) -> anyhow::Result<()> {
        let sources = Sources {
            file: self.config.clone(),
            env: std::env::vars().collect(),
            data_dir: self.data_dir.clone(),
        };
        let config = Config::load(&sources)?;
        let serving = matches!(self.command, Command::Up { .. } | Command::Serve { .. });
        let tracing =
            mercato_runtime::telemetry::install(config.log.format, serving.then_some(&config.telemetry));
        let result = self.command.run(config).await;
        if let Some(tracing) = tracing {
            tracing.shutdown(SPAN_FLUSH_PATIENCE).await;
        }
        result
    }
}

/// How long a stopping process waits for its last spans to reach the collector.
const SPAN_FLUSH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

impl Command {
    async fn run(self, config: Config) -> anyhow::Result<()> {
        match self {
            Command::Up { no_seed } => {
                let mut config = config;
                config.inventory.demo_catalogue = !no_seed;
                serve(&config, ServiceName::ALL, true).await
            }
            Command::Loadgen(args) => crate::loadgen::run(args).await,
            Command::Serve { service } => serve(&config, &[service], false).await,
            Command::Migrate { services } => migrate(&config, &services).await,
            Command::Config => {
                crate::say!("{}", config::render_toml(&config));
                Ok(())
            }
            Command::Keys { command } => keys(&config, &command),
            Command::Admin {
                command: AdminCommand::Create { email },
            } => create_admin(&config, &email).await,
            Command::Dlq { command } => dlq(&config, &command).await,
            Command::Projections { command } => projections(&config, &command).await,
            Command::Deploy {
                command: DeployCommand::Switch(args),
            } => deploy_switch(&config, &args).await,
            Command::K8s(args) => Ok(crate::k8s::run(&config, &args)?),
            Command::Access(args) => Ok(crate::access::run(&config, &args)?),
            Command::Certs { command } => Ok(crate::certs::run(&config.data_dir, &command)?),
            Command::Trace { order_id, urls } => trace(&config, &order_id, urls).await,
            Command::Openapi(args) => Ok(crate::openapi::run(&args)?),
            Command::Contracts { dir, check: true } => Ok(mercato_contracts::files::check(&dir)?),
            Command::Contracts { dir, check: false } => Ok(mercato_contracts::files::write(&dir)?),
        }
    }
}

async fn serve(config: &Config, names: &[ServiceName], embedded: bool) -> anyhow::Result<()> {
    check_tls(config, names, embedded)?;
    if !embedded && !config.tls.enabled {
        // Embedded services talk over loopback inside one process; distributed ones cross a
        // network where anyone who can reach a port can call it.
        tracing::warn!(
            risk = "unauthenticated plaintext between services",
            "TLS is off ([tls] enabled = false): every service accepts any caller, internal gRPC \
             included, and traffic between services can be read and altered on the network"
        );
    }
    let shutdown = CancellationToken::new();
    mercato_runtime::shutdown::cancel_on_signal(shutdown.clone());
    let running = services::start(config, names, shutdown).await?;
    print_started(config, &running, embedded);
    running.wait().await
}

/// `[tls]` names one certificate, so it serves one service per process (the gateway's presents
/// it to the services it calls).
fn check_tls(config: &Config, names: &[ServiceName], embedded: bool) -> anyhow::Result<()> {
    if !config.tls.enabled {
        return Ok(());
    }
    if embedded {
        anyhow::bail!("tls.enabled: embedded mode serves on loopback in one process, without TLS");
    }
    if names.len() != 1 {
        anyhow::bail!("tls.enabled: one certificate serves one service; run each in its own process");
    }
    Ok(())
}

fn print_started(config: &Config, running: &Running, embedded: bool) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "Mercato is up. Data directory: {}",
        config.data_dir().display()
    );
    for s in &running.started {
        let _ = writeln!(
            out,
            "  {:<16} {:<26} {}",
            s.name.as_str(),
            s.url,
            s.backend.unwrap_or("")
        );
        // Its own line, so that a probe bound to port 0 can be found.
        if let Some(probe) = s.probe {
            let _ = writeln!(
                out,
                "  {:<16} http://{probe}",
                format!("{}-probe", s.name.as_str())
            );
        }
    }
    if embedded && let Some(gateway) = running.url(ServiceName::Gateway) {
        let _ = writeln!(out, "Try:");
        let _ = writeln!(
            out,
            "  curl -s {gateway}/api/identity/register -H 'content-type: application/json' \\\n    -d '{{\"email\":\"ada@example.com\",\"password\":\"correct horse\",\"name\":\"Ada\"}}'"
        );
        let _ = writeln!(out, "Press Ctrl-C to stop.");
    }
    let _ = out.flush();
}

async fn migrate(config: &Config, services: &[ServiceName]) -> anyhow::Result<()> {
    let chosen: Vec<ServiceName> = if services.is_empty() {
        ServiceName::ALL.to_vec()
    } else {
        services.to_vec()
    };
    for service in chosen.into_iter().filter(|s| s.is_domain_service()) {
        let database = config.database_for(service);
        let db = mercato_storage::Db::connect(&database).await?;
        let applied = mercato_storage::migrate(&db, service.as_str(), service.migrations()).await?;
        crate::sayln!(
            "{}: {applied} migration(s) applied ({})",
            service.as_str(),
            db.backend().as_str()
        );
        db.close().await;
    }
    Ok(())
}

fn keys(config: &Config, command: &KeysCommand) -> anyhow::Result<()> {
    let store = config.identity.key_store();
    let ring = match command {
        KeysCommand::Rotate => {
            let ring = store.rotate()?;
            let newest = ring
                .published
                .keys
                .first()
                .and_then(|k| k.kid.clone())
                .unwrap_or_default();
            crate::sayln!(
                "new signing key {newest}: published now, signing in {} s",
                config.identity.key_activation_delay().as_secs()
            );
            ring
        }
        KeysCommand::List => store.load()?,
    };
    let active_at = ring
        .published
        .keys
        .iter()
        .position(|k| k.kid.as_deref() == Some(ring.active.kid.as_str()));
    for (i, key) in ring.published.keys.iter().enumerate() {
        let kid = key.kid.as_deref().unwrap_or("?");
        let marker = match active_at {
            Some(a) if i == a => "active",
            Some(a) if i < a => "next",
            _ => "retiring",
        };
        crate::sayln!("  {kid}  {marker}");
    }
    Ok(())
}

async fn dlq(config: &Config, command: &DlqCommand) -> anyhow::Result<()> {
    let bus = mercato_messaging::Bus::connect(&config.bus).await?;
    match command {
        DlqCommand::List { limit } => {
            let letters = bus.dead_letters(*limit).await?;
            if letters.is_empty() {
                crate::sayln!("no dead letters");
            }
            for l in letters {
                crate::sayln!(
                    "{}  group={}  type={}  event={}  attempts={}  error={}",
                    l.id,
                    l.group,
                    l.envelope.event_type,
                    l.envelope.id,
                    l.attempts,
                    l.error
                );
            }
        }
        DlqCommand::Replay { id } => {
            if !bus.replay_dead_letter(id).await? {
                anyhow::bail!("no dead letter {id}");
            }
            crate::sayln!("replayed {id}");
        }
    }
    Ok(())
}

async fn projections(config: &Config, command: &ProjectionsCommand) -> anyhow::Result<()> {
    let kept = [
        (ServiceName::Customers, mercato_customers::PROJECTIONS),
        (ServiceName::Orders, mercato_orders::PROJECTIONS),
    ];
    match command {
        ProjectionsCommand::List => {
            for name in kept.iter().flat_map(|(_, names)| names.iter()) {
                crate::sayln!("{name}");
            }
        }
        ProjectionsCommand::Rebuild { name } => {
            let (service, _) = kept
                .iter()
                .find(|(_, names)| names.contains(&name.as_str()))
                .with_context(|| format!("no projection {name:?}; see `mercato projections list`"))?;
            let database = config.database_for(*service);
            let applied = match service {
                ServiceName::Orders => {
                    let db = ServiceName::Orders.open_database(&database).await?;
                    let applied = mercato_orders::rebuild_projection(&db, &config.orders, name).await;
                    db.close().await;
                    applied
                }
                _ => {
                    let db = ServiceName::Customers.open_database(&database).await?;
                    let applied = mercato_customers::rebuild_projection(&db, name).await;
                    db.close().await;
                    applied
                }
            };
            crate::sayln!("rebuilt {name} from {} event(s)", applied?);
        }
    }
    Ok(())
}

/// An admin's access token: MERCATO_ADMIN_TOKEN, or a sign-in through `gateway` as
/// MERCATO_ADMIN_EMAIL with MERCATO_ADMIN_PASSWORD (or a prompt).
async fn admin_token(gateway: &str) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("MERCATO_ADMIN_TOKEN")
        && !token.is_empty()
    {
        return Ok(token);
    }
    let email = std::env::var("MERCATO_ADMIN_EMAIL")
        .context("set MERCATO_ADMIN_TOKEN, or MERCATO_ADMIN_EMAIL (and MERCATO_ADMIN_PASSWORD)")?;
    let password = match std::env::var("MERCATO_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => rpassword::prompt_password(format!("Password for {email}: "))
            .context("cannot read the password")?,
    };
    let http = reqwest::Client::new();
    crate::loadgen::token(&http, gateway.trim_end_matches('/'), &email, &password)
        .await
        .context("cannot sign in as the admin")
}

async fn trace(config: &Config, order_id: &str, urls: Vec<String>) -> anyhow::Result<()> {
    let token = admin_token(&config.endpoint(ServiceName::Gateway).base_url()).await?;
    let urls = if urls.is_empty() {
        ServiceName::ALL
            .iter()
            .filter(|s| **s != ServiceName::Gateway)
            .map(|s| config.endpoint(*s).base_url())
            .collect()
    } else {
        urls
    };
    let spans = crate::trace::gather(&urls, &token, order_id).await?;
    anyhow::ensure!(
        !spans.is_empty(),
        "no span of order {order_id} is kept: it is older than the span stores hold, or traces are off"
    );
    crate::say!("{}", crate::trace::waterfall(&spans));
    Ok(())
}

async fn deploy_switch(config: &Config, args: &SwitchArgs) -> anyhow::Result<()> {
    if !(0.0..=100.0).contains(&args.max_error_percent) {
        anyhow::bail!("--max-error-percent must be between 0 and 100");
    }
    let gateway = args
        .gateway
        .clone()
        .unwrap_or_else(|| config.endpoint(ServiceName::Gateway).base_url());
    let token = admin_token(&gateway).await?;
    let to = match args.to {
        GroupArg::Blue => mercato_gateway::Group::Blue,
        GroupArg::Green => mercato_gateway::Group::Green,
    };
    let plan = mercato_gateway::deploy::SwitchPlan {
        watch: std::time::Duration::from_secs(args.watch_secs),
        max_error_rate: args.max_error_percent / 100.0,
        min_requests: args.min_requests,
        ..mercato_gateway::deploy::SwitchPlan::new(&gateway, &token, &args.upstream, to)
    };
    let report = mercato_gateway::deploy::switch(&plan, |line| crate::sayln!("{line}")).await?;
    crate::sayln!(
        "{} is on {}: {} requests, {} failed while watched",
        args.upstream,
        to.as_str(),
        report.requests,
        report.failures
    );
    Ok(())
}

async fn create_admin(config: &Config, email: &str) -> anyhow::Result<()> {
    let password = match std::env::var("MERCATO_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => rpassword::prompt_password("Password for the admin account: ")
            .context("cannot read the password")?,
    };
    let identity = service_config::identity(config);
    let db = ServiceName::Identity
        .open_database(&identity.service.database)
        .await?;
    let accounts = mercato_identity::accounts(db.clone(), &identity)?;
    let outcome = mercato_identity::admin::create_admin(&accounts, email, &password).await;
    db.close().await;
    match outcome? {
        mercato_identity::admin::AdminOutcome::Created { id } => {
            crate::sayln!("created admin {email} ({id})")
        }
        mercato_identity::admin::AdminOutcome::Promoted { id } => {
            crate::sayln!("{email} ({id}) is now an admin")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_serves_one_kit_service_per_distributed_process() {
        let mut config = Config::default();
        let all = ServiceName::ALL;
        assert!(
            check_tls(&config, all, true).is_ok(),
            "plaintext is always allowed"
        );
        config.tls.enabled = true;
        assert!(check_tls(&config, &[ServiceName::Orders], false).is_ok());
        assert!(check_tls(&config, &[ServiceName::Gateway], false).is_ok());
        for (names, embedded) in [
            (all, true),
            (&[ServiceName::Orders, ServiceName::Inventory][..], false),
            (&[ServiceName::Gateway, ServiceName::Orders][..], false),
        ] {
            let refused = check_tls(&config, names, embedded).unwrap_err().to_string();
            assert!(refused.starts_with("tls.enabled: "), "{refused}");
        }
        assert_eq!(config.base_url(ServiceName::Orders), "https://127.0.0.1:8104");
        assert_eq!(config.base_url(ServiceName::Gateway), "http://127.0.0.1:8080");
        assert_eq!(
            config.base_url(ServiceName::PaymentSandbox),
            "http://127.0.0.1:8190"
        );
    }

    #[test]
    fn the_gateway_is_printed_with_https_when_it_serves_tls() {
        let mut config = Config::default();
        let addr: std::net::SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(config.url_of(ServiceName::Gateway, addr), "http://127.0.0.1:8443");
        config.gateway.edge.tls = Some(mercato_gateway::PublicTls {
            cert: "gateway.pem".into(),
            key: "gateway.key".into(),
            ca: None,
        });
        assert_eq!(
            config.url_of(ServiceName::Gateway, addr),
            "https://127.0.0.1:8443"
        );
        assert_eq!(config.base_url(ServiceName::Gateway), "https://127.0.0.1:8080");
        // The services' own mutual TLS is another setting.
        assert_eq!(config.base_url(ServiceName::Orders), "http://127.0.0.1:8104");
    }
}
