//! One service's HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::HttpConfig;
use crate::health::Readiness;
use crate::metrics::{self, HttpMetrics};
use crate::observe::{ObserveLayer, Observer};
use crate::problem::Problem;
use crate::tls::{Peer, ServerTls};

/// What a service hands to the runtime: its name, routes, readiness checks and metrics.
pub struct Service {
    pub name: &'static str,
    pub routes: Router,
    pub readiness: Readiness,
    pub registry: Registry,
    /// The routes carry their own catch-all (the gateway's proxy); otherwise unknown paths get
    /// the runtime's `404` problem. Such a server is the edge: it takes no deadline from its
    /// clients (`x-request-deadline-ms`), which every other service accepts from its callers.
    pub own_fallback: bool,
}

/// A bound, not yet running, server.
pub struct Server {
    name: &'static str,
    listener: tokio::net::TcpListener,
    app: Router,
    readiness: Readiness,
    config: HttpConfig,
    tls: Option<ServerTls>,
    /// The plaintext listener of `/health` and `/ready`, beside a TLS one, and its routes.
    probe: Option<(tokio::net::TcpListener, Router)>,
    observe: ObserveLayer,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("addr", &self.local_addr())
            .finish()
    }
}

/// `/health` and `/ready`: what every port of a service answers, the probe port only these.
fn probe_routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(readiness)
}

impl Server {
    /// Binds `listen` (port 0 picks a free port) and assembles the service's router.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(listen: SocketAddr, config: &HttpConfig, service: Service) -> std::io::Result<Self> {
        Self::bind_tls(listen, config, service, None).await
    }

    /// As [`bind`](Self::bind), serving over mutual TLS when `tls` is given: only clients with a
    /// certificate from the CA are served, and only where its allow list lets them.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind_tls(
        listen: SocketAddr,
        config: &HttpConfig,
        service: Service,
        tls: Option<ServerTls>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let Service {
            name,
            routes,
            mut readiness,
            mut registry,
            own_fallback,
        } = service;
        crate::trace::register_metrics(&mut registry);
        readiness.set_timeout(Duration::from_millis(config.readiness_check_timeout_ms));
        let observer = Observer {
            service: name,
            metrics: HttpMetrics::register(&mut registry),
            body_limit: config.body_limit_bytes,
            timeout: config.request_timeout(),
            accept_deadlines: !own_fallback,
        };
        let ops_routes = probe_routes(readiness.clone()).merge(
            Router::new()
                .route("/metrics", get(render_metrics))
                .with_state(Arc::new(registry)),
        );
        let probe = match tls.as_ref().and_then(ServerTls::probe) {
            Some(listen) => {
                let routes = probe_routes(readiness.clone())
                    .method_not_allowed_fallback(method_not_allowed)
                    .fallback(not_found);
                Some((tokio::net::TcpListener::bind(listen).await?, routes))
            }
            None => None,
        };
        let mut app = routes
            .merge(ops_routes)
            .method_not_allowed_fallback(method_not_allowed);
        if !own_fallback {
            app = app.fallback(not_found);
        }
        // Each `Router::layer` wraps every route in a boxed service that is cloned and boxes
        // its future on every request, so the layers go on together where they can.
        let guard = (
            CatchPanicLayer::custom(|_| Problem::internal().into_response()),
            DefaultBodyLimit::max(config.body_limit_bytes),
        );
        let observe = ObserveLayer::new(observer);
        let app = match &tls {
            None => app.layer((observe.clone(), guard)),
            Some(tls) => app
                .layer(guard)
                .layer(axum::middleware::from_fn_with_state(
                    tls.allow(),
                    crate::tls::authorize,
                ))
                .layer(observe.clone()),
        };
        Ok(Self {
            name,
            listener,
            app,
            readiness,
            config: config.clone(),
            tls,
            probe,
            observe,
        })
    }

    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The bound address.
    ///
    /// # Panics
    /// Never for a bound TCP listener.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The bound address of the plaintext probe listener, when there is one.
    #[must_use]
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    #[must_use]
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The middleware the router runs every request under (the same metrics), for a server
    /// that serves some requests without the router: the gateway's proxied ones.
    #[must_use]
    pub fn observe_layer(&self) -> ObserveLayer {
        self.observe.clone()
    }

    /// The bound listener and the assembled router, for a server that runs its own connections
    /// (the gateway, which sets HTTP/1 and HTTP/2 limits at the edge); it then owns the shutdown
    /// steps [`run_until_stopped`](Self::run_until_stopped) takes.
    ///
    /// # Panics
    /// For a server bound with TLS, whose connections the runtime must run itself.
    pub fn into_parts(self) -> (tokio::net::TcpListener, Router, Readiness) {
        assert!(self.tls.is_none(), "a TLS server runs its own connections");
        (self.listener, self.app, self.readiness)
    }

    /// Serves until `shutdown` is cancelled, then: readiness reports "stopping", the drain delay
    /// passes, the listener closes, and in-flight requests get up to the shutdown grace to finish.
    ///
    /// # Errors
    /// The server failed while accepting connections.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Self {
            name,
            listener,
            app,
            readiness,
            config,
            tls,
            probe,
            observe: _,
        } = self;
        let probes = async {
            match probe {
                // Stops with the main listener, its `/ready` reporting "stopping" meanwhile.
                Some((listener, routes)) => {
                    serve::<_, SocketAddr>(
                        name,
                        listener,
                        routes,
                        readiness.clone(),
                        &config,
                        shutdown.clone(),
                    )
                    .await
                }
                None => Ok(()),
            }
        };
        let main = async {
            match tls {
                Some(tls) => {
                    let listener = tls.listener(listener);
                    serve::<_, Peer>(name, listener, app, readiness.clone(), &config, shutdown.clone()).await
                }
                None => {
                    serve::<_, SocketAddr>(name, listener, app, readiness.clone(), &config, shutdown.clone())
                        .await
                }
            }
        };
        let (main, probes) = tokio::join!(main, probes);
        main.and(probes)
    }
}

/// Serves until `shutdown`, as [`Server::run_until_stopped`] says, with `C` as each request's
/// `ConnectInfo`.
async fn serve<L, C>(
    name: &'static str,
    listener: L,
    app: Router,
    readiness: Readiness,
    config: &HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    C: for<'a> Connected<axum::serve::IncomingStream<'a, L>> + Send + Sync + Clone + 'static,
{
    let drain_delay = Duration::from_millis(config.drain_delay_ms);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let signal_readiness = readiness.clone();
    let draining = shutdown.clone();
    let stopped = shutdown.child_token();
    let serve = axum::serve(listener, app.into_make_service_with_connect_info::<C>()).with_graceful_shutdown(
        async move {
            draining.cancelled().await;
            signal_readiness.set_stopping();
            tracing::info!(service = name, "shutting down: readiness off");
            tokio::time::sleep(drain_delay).await;
        },
    );
    let serve = std::pin::pin!(serve.into_future());
    let mut serve = serve;
    tokio::select! {
        result = &mut serve => return result,
        () = stopped.cancelled() => {}
    }
    // The listener closes after the drain delay; in-flight requests get the grace period.
    match tokio::time::timeout(drain_delay + grace, &mut serve).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                service = name,
                "shutdown grace elapsed with requests still running"
            );
            Ok(())
        }
    }
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    let report = readiness.report().await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

async fn render_metrics(State(registry): State<Arc<Registry>>, headers: http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, text) = metrics::render_for(accept, &registry);
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn not_found() -> Problem {
    Problem::not_found("no such resource")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
    )
    .with_detail("this resource does not support the request's method")
}
