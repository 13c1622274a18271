//! Mercato's API gateway: the one door clients use.
//!
//! - [`config`]: routes (path prefix → upstream, public or authenticated, roles, rate class),
//!   access rules, rate classes and timeouts.
//! - [`routes`]: longest-prefix matching on whole path segments.
//! - [`rbac`]: the roles a request needs (route roles plus method- and path-scoped rules).
//! - [`rate_limit`]: GCRA per caller (token subject, else client IP) and route class, in this
//!   process or shared through Redis, with a local fallback while Redis is down.
//! - [`upstream`]: the instances of each upstream service and the pick among them.
//! - [`edge`]: client connections under the edge's limits (slow heads and bodies, header caps,
//!   HTTP/2 resets).
//! - [`framing`]: each HTTP/1 request's framing followed beneath hyper, so that a head with
//!   both `Content-Length` and `Transfer-Encoding` is refused with `400`.
//! - [`forwarded`]: the client's address, through trusted proxies only.
//! - [`front`]: the gateway's own endpoints through axum's router, every other path straight to
//!   the proxy under the same middleware.
//! - [`preauth`]: failed authentications rationed per client address, and a screen that refuses
//!   impossible tokens before any decoding.
//! - [`proxy`]: authenticates, rewrites headers (identity headers are the gateway's alone,
//!   hop-by-hop headers dropped, `x-forwarded-*` added), streams the body both ways, and turns
//!   upstream failures into `502`/`504` problems instead of hangs. Order per request:
//!   authenticate (when the route or a rule needs it, or a token is offered), rate-limit, check
//!   roles, forward.
//! - [`adaptive`]: a concurrency limit per upstream that follows its latency; excess is shed.
//! - [`resilience`]: the upstream call itself: a circuit breaker per upstream (`503` with
//!   `Retry-After` while open), retries of idempotent body-less requests under a budget, and the
//!   route's timeout as a deadline sent on in `x-request-deadline-ms`.
#![forbid(unsafe_code)]

pub mod adaptive;
pub mod admin;
pub mod config;
pub mod console;
pub mod deploy;
pub mod edge;
pub mod forwarded;
pub mod framing;
pub mod front;
pub mod openapi;
pub mod preauth;
pub mod proxy;
pub mod rate_limit;
pub mod rbac;
mod redis_connection;
pub mod resilience;
pub mod routes;
pub mod trace;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mercato_runtime::{CancellationToken, ClientConfig, HttpConfig, Readiness, Registry, Server, Service};
use mercato_security::tls::TlsFiles;
use mercato_security::{JwksClient, JwksClientConfig, Verifier, VerifierConfig};

pub use config::{
    AdaptiveConcurrencyConfig, AdminStateBackend, AdminStateConfig, AuthConfig, BalancingPolicy,
    BulkheadSettings, CircuitBreakerSettings, ConsoleConfig, EdgeConfig, GatewayConfig, HealthCheckConfig,
    LoadBalancingConfig, PublicTls, RateClassConfig, RateLimitBackend, RateLimitConfig, RetrySettings,
    RouteAuth, RouteConfig, RuleConfig, UpstreamSettings,
};
pub use rate_limit::{Clock, LimiterHealth, ManualClock, SystemClock};
pub use upstream::Group;
use upstream::health::HealthChecker;

/// The gateway's name in logs and metrics.
pub const NAME: &str = "gateway";

/// The header carrying the verified subject to services; never accepted from clients.
pub const SUBJECT_HEADER: &str = "x-auth-subject";
/// The header carrying the verified roles, comma-separated; never accepted from clients.
pub const ROLES_HEADER: &str = "x-auth-roles";

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: HttpConfig,
    pub client: ClientConfig,
    pub gateway: GatewayConfig,
    pub auth: VerifierConfig,
    /// Upstream name → base URLs of its instances.
    pub upstreams: BTreeMap<String, Vec<String>>,
    /// Where the identity service publishes its keys.
    pub jwks_url: String,
    /// The gateway's certificate for the services served over mutual TLS (`[tls]`): presented
    /// to every `https://` upstream and to identity for its keys.
    pub tls: Option<TlsFiles>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid gateway configuration: {key}: {message}")]
    Config { key: String, message: String },
    #[error("gateway cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A built gateway, bound and ready to run.
#[derive(Debug)]
pub struct App {
    server: Server,
    sampler: Option<console::sampler::Sampler>,
    proxy: proxy::Proxy,
    checker: HealthChecker,
    store: Arc<upstream::shared::StateStore>,
    syncing: upstream::Upstreams,
    http: HttpConfig,
    edge: config::EdgeConfig,
    public_tls: Option<Arc<rustls::ServerConfig>>,
}

/// Checks the routes against the upstreams and binds the listener.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config) -> Result<App, StartError> {
    build_with_clock(config, Arc::new(SystemClock)).await
}

/// [`build`], with the rate limiter and the failure counts reading `clock` (tests drive time with a [`ManualClock`]).
///
/// # Errors
/// See [`StartError`].
pub async fn build_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<App, StartError> {
    if let Err(refused) = mercato_runtime::Validate::validate(&config.gateway) {
        let refused = refused.within("gateway");
        return Err(StartError::Config {
            key: refused.key,
            message: refused.reason,
        });
    }
    let public_tls = match &config.gateway.edge.tls {
        Some(tls) => Some(tls.server_config().map_err(|e| StartError::Config {
            key: "gateway.edge.tls".into(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let mut registry = Registry::default();
    let upstreams = upstream::Upstreams::new(
        &config.upstreams,
        &config.gateway,
        config.tls.clone(),
        &mut registry,
    )?;
    let table = routes::RouteTable::new(&config.gateway.routes, |name| upstreams.get(name).is_some())?;
    let rules = rbac::Rules::new(&config.gateway.rules)?;
    let preauth = config
        .gateway
        .preauth
        .enabled
        .then(|| preauth::Preauth::new(&config.gateway.preauth, Arc::clone(&clock), &mut registry));
    let limiter = if config.gateway.rate_limit.enabled {
        Some(Arc::new(rate_limit::RateLimiter::new(
            &config.gateway.rate_limit,
            clock,
            &mut registry,
        )?))
    } else {
        None
    };

    let jwks_config = JwksClientConfig {
        url: config.jwks_url.clone(),
        max_age: Duration::from_secs(config.gateway.jwks_max_age_secs),
        min_refresh_interval: Duration::from_millis(config.gateway.jwks_min_refresh_interval_ms),
        timeout: Duration::from_millis(
            config
                .client
                .connect_timeout_ms
                .max(config.gateway.connect_timeout_ms)
                * 2,
        ),
    };
    let jwks = match &config.tls {
        Some(files) if config.jwks_url.starts_with("https://") => {
            let tls =
                mercato_runtime::tls::client_for(files, "identity").map_err(|e| StartError::Config {
                    key: "tls".into(),
                    message: e.to_string(),
                })?;
            JwksClient::with_http(
                jwks_config,
                mercato_runtime::tls::reqwest_builder(reqwest::Client::builder(), &tls),
            )
        }
        _ => JwksClient::new(jwks_config),
    };
    let verifier = verifier(config, &jwks);
    let pool = proxy::pool_settings(&config.gateway, &config.client);
    let checker = HealthChecker::new(upstreams.clone(), pool, config.gateway.health_check.clone());
    let store = Arc::new(
        upstream::shared::StateStore::new(&config.gateway.admin_state).map_err(|message| {
            StartError::Config {
                key: "gateway.admin_state.redis_url".into(),
                message,
            }
        })?,
    );
    // The stored state wins over the configuration; a store that cannot be read yet is retried
    // by the sync loop.
    if let Err(error) = store.sync(&upstreams).await {
        tracing::warn!(%error, "cannot read the admin state at start; starting from the configuration");
    }
    let admin_state = admin::Admin::new(
        upstreams.clone(),
        verifier.clone(),
        checker.clone(),
        Arc::clone(&store),
    );
    let console = if config.gateway.console.enabled {
        Some(console::Console::new(
            admin_state.clone(),
            verifier.clone(),
            &config.gateway.console,
            config.gateway.rate_limit.classes.clone(),
            Duration::from_millis(config.gateway.upstream_timeout_ms),
        )?)
    } else {
        None
    };
    let mut admin = admin::router(admin_state);
    if let Some(console) = &console {
        admin = admin.merge(console::router(console.clone()));
    }
    let syncing = upstreams.clone();
    let limits = adaptive::limits(
        upstreams.names(),
        &config.gateway.adaptive_concurrency,
        &mut registry,
    );
    let proxy = proxy::Proxy::new(
        table,
        upstreams,
        verifier,
        rules,
        limiter.clone(),
        preauth,
        &config.gateway,
        pool,
        config.http.body_limit_bytes,
        limits,
    )?;
    let readiness = Readiness::new().with_check("jwks", move || {
        let jwks = jwks.clone();
        async move {
            if jwks.has_keys() {
                return Ok(());
            }
            jwks.refresh().await.map(|_| ()).map_err(|e| e.to_string())
        }
    });
    // A limiter that fell back to local limits still serves: it reports "degraded" (the gateway
    // stays ready) rather than failing readiness, which would take every gateway out of
    // rotation when Redis dies.
    let readiness = match limiter {
        Some(limiter) => {
            // Redis itself, asked on every probe with its latency, so the console shows the
            // store's state and not only whether the limiter fell back; its loss degrades too.
            let readiness = if limiter.shares_limits() {
                let pinged = Arc::clone(&limiter);
                readiness
                    .with_degradable_check("redis", move || {
                        let limiter = Arc::clone(&pinged);
                        async move { Ok(limiter.ping_store().await.and_then(Result::err)) }
                    })
                    .on_engine("redis")
            } else {
                readiness
            };
            readiness.with_degradable_check("rate_limiter", move || {
                let health = limiter.health();
                async move {
                    match health {
                        LimiterHealth::Degraded(reason) => {
                            Ok(Some(format!("falling back to local limits: {reason}")))
                        }
                        _ => Ok(None),
                    }
                }
            })
        }
        None => readiness,
    };
    let service = Service {
        name: NAME,
        routes: admin.merge(proxy.clone().router()),
        readiness,
        registry,
        own_fallback: true,
    };
    // The gateway streams to upstreams that enforce their own time limits; its own limit is the
    // upstream timeout, so the server-wide request timeout is off.
    let http = HttpConfig {
        request_timeout_ms: 0,
        ..config.http.clone()
    };
    let server = Server::bind(config.listen, &http, service)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let sampler = match console {
        Some(console) => {
            let sampler = console.sampler().clone();
            sampler.set_own(own_endpoint(config, server.local_addr())?);
            Some(sampler)
        }
        None => None,
    };
    Ok(App {
        server,
        sampler,
        proxy,
        checker,
        store,
        syncing,
        http,
        edge: config.gateway.edge.clone(),
        public_tls,
    })
}

/// Where the console's sampler reads the gateway itself. With public TLS that is HTTPS, at
/// `localhost` (a name the gateway's certificate carries, as `mercato certs` issues it) resolved
/// to the bound address, trusting `[gateway.edge.tls] ca`, else `[tls]`'s CA: a plaintext
/// request to a TLS port would only ever show the gateway as down.
fn own_endpoint(config: &Config, addr: SocketAddr) -> Result<console::sampler::Own, StartError> {
    let Some(public) = &config.gateway.edge.tls else {
        return Ok(console::sampler::Own {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
        });
    };
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let mut http = reqwest::Client::builder().resolve("localhost", SocketAddr::new(ip, addr.port()));
    let ca = match (&public.ca, &config.tls) {
        (Some(ca), _) => Some((ca, "gateway.edge.tls.ca")),
        (None, Some(files)) => Some((&files.ca, "tls.ca")),
        (None, None) => None,
    };
    if let Some((ca, key)) = ca {
        let refused = |message: String| StartError::Config {
            key: key.into(),
            message,
        };
        let pem = std::fs::read(ca).map_err(|e| refused(format!("{}: {e}", ca.display())))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| refused(format!("{}: {e}", ca.display())))?;
        for root in roots {
            http = http.add_root_certificate(root);
        }
    }
    let http = http.build().map_err(|e| StartError::Config {
        key: "gateway.edge.tls".into(),
        message: e.to_string(),
    })?;
    Ok(console::sampler::Own {
        url: format!("https://localhost:{}", addr.port()),
        http,
    })
}

/// The verifier of clients' tokens, remembering as many verified ones as `[gateway.auth]` allows.
fn verifier(config: &Config, jwks: &JwksClient) -> Verifier {
    Verifier::new(config.auth.clone(), Arc::new(jwks.clone()))
        .with_verified_capacity(config.gateway.auth.verified_tokens_max)
}

impl App {
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Serves until `shutdown` is cancelled.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let checks_stop = shutdown.child_token();
        let checks = tokio::spawn(self.checker.run(checks_stop.clone()));
        let sync = tokio::spawn(self.store.run(self.syncing, checks_stop.clone()));
        let sampling = self.sampler.map(|s| tokio::spawn(s.run(checks_stop.clone())));
        let observe = self.server.observe_layer();
        let (listener, router, readiness) = self.server.into_parts();
        let served = edge::serve(
            listener,
            self.public_tls.map(tokio_rustls::TlsAcceptor::from),
            front::Front::new(router, observe, self.proxy),
            readiness,
            &self.http,
            &self.edge,
            shutdown,
        )
        .await;
        // The server can also end on its own (an I/O error); the checks end with it.
        checks_stop.cancel();
        let _ = checks.await;
        let _ = sync.await;
        if let Some(sampling) = sampling {
            let _ = sampling.await;
        }
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_verifier_remembers_no_more_tokens_than_the_auth_section_allows() {
        let issuer = mercato_testkit::auth::TestIssuer::start().await;
        let mut gateway = GatewayConfig::default();
        gateway.auth.verified_tokens_max = 32;
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            http: HttpConfig::default(),
            client: ClientConfig::default(),
            gateway,
            auth: issuer.config(),
            upstreams: BTreeMap::new(),
            jwks_url: issuer.jwks_url().to_owned(),
            tls: None,
        };
        let jwks = JwksClient::new(JwksClientConfig {
            url: config.jwks_url.clone(),
            max_age: Duration::from_secs(60),
            min_refresh_interval: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
        });
        let verifier = verifier(&config, &jwks);
        for i in 0..200 {
            let token = issuer.token(&format!("customer-{i}"), &[]);
            verifier.verify_shared(&token).await.unwrap();
            assert!(verifier.verified_tokens() <= 32, "{}", verifier.verified_tokens());
        }
        assert!(verifier.verified_tokens() > 0, "verified tokens are remembered");
    }
}
