//! The operations console at `/console`, for admins: the system's health and rates, an order's
//! saga, trace, payment and notifications, the dead letters, and the traffic split.
//!
//! - [`assets`]: the pages (hand-written HTML, CSS and ES modules from `gateway/console/`),
//!   embedded in the binary and served with a Content-Security-Policy that allows no inline
//!   script or style.
//! - [`session`]: signing in through identity, the session and refresh cookies, renewal, the CSRF and origin checks
//!   every action passes, and the audit line every action writes.
//! - [`sampler`]: every instance's `/ready` and `/metrics`, read periodically into a ring buffer
//!   for the System page's charts.
//! - [`pages`]: the JSON each page reads, gathered from the gateway and the services' admin
//!   endpoints with the admin's own token.

pub mod assets;
mod pages;
pub mod sampler;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post, put};
use mercato_runtime::Problem;
use mercato_security::Verifier;

use crate::StartError;
use crate::admin::Admin;
use crate::config::{ConsoleConfig, RateClassConfig};
use crate::upstream::{Group, Upstreams};
use sampler::Sampler;

/// The console's HTTP clients. With `[tls]` there is one per upstream, over the TLS the
/// gateway's own calls to that upstream use ([`Upstreams::client_tls`]): it presents the
/// gateway's certificate and accepts only the service the upstream is named after, so the
/// services let the console in as the gateway, under the same allow list.
#[derive(Debug, Clone)]
pub struct Clients {
    plain: reqwest::Client,
    by_upstream: Arc<BTreeMap<String, reqwest::Client>>,
}

impl Clients {
    /// Clients for every upstream of `upstreams`, each request bounded by `timeout`.
    ///
    /// # Errors
    /// `[tls]` files that cannot be read, or a client that cannot be built over them.
    pub fn new(upstreams: &Upstreams, timeout: Duration) -> Result<Self, StartError> {
        let builder = || reqwest::Client::builder().timeout(timeout);
        let refused = |message: String| StartError::Config {
            key: "tls".into(),
            message,
        };
        let mut by_upstream = BTreeMap::new();
        for name in upstreams.names() {
            let Some(tls) = upstreams.client_tls(name).map_err(|e| refused(e.to_string()))? else {
                continue;
            };
            let client = mercato_runtime::tls::reqwest_builder(builder(), &tls)
                .build()
                .map_err(|e| refused(format!("the console's client for {name}: {e}")))?;
            by_upstream.insert(name.to_owned(), client);
        }
        Ok(Self {
            plain: builder().build().unwrap_or_default(),
            by_upstream: Arc::new(by_upstream),
        })
    }

    /// The client for calls to `upstream`'s instances.
    #[must_use]
    pub fn to(&self, upstream: &str) -> &reqwest::Client {
        self.by_upstream.get(upstream).unwrap_or(&self.plain)
    }
}

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    upstreams: Upstreams,
    verifier: Verifier,
    admin: Admin,
    clients: Clients,
    config: Arc<ConsoleConfig>,
    rate_classes: Arc<BTreeMap<String, RateClassConfig>>,
    sampler: Sampler,
}

impl Console {
    pub(crate) fn new(
        admin: Admin,
        verifier: Verifier,
        config: &ConsoleConfig,
        rate_classes: BTreeMap<String, RateClassConfig>,
        call_timeout: Duration,
    ) -> Result<Self, StartError> {
        let upstreams = admin.upstreams().clone();
        let clients = Clients::new(&upstreams, call_timeout)?;
        let sampler = Sampler::new(
            upstreams.clone(),
            clients.clone(),
            Duration::from_millis(config.sample_interval_ms),
            config.samples,
        );
        Ok(Self {
            upstreams,
            verifier,
            admin,
            clients,
            config: Arc::new(config.clone()),
            rate_classes: Arc::new(rate_classes),
            sampler,
        })
    }

    #[must_use]
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The instances of `upstream`, healthy ones of the larger share first.
    fn instances_of(&self, upstream: &str) -> Vec<String> {
        let Some(found) = self.upstreams.get(upstream) else {
            return Vec::new();
        };
        let live = self.upstreams.view(found).live;
        let mut all: Vec<_> = [live, live.other()]
            .into_iter()
            .flat_map(|g: Group| found.instances(g).iter().cloned().collect::<Vec<_>>())
            .collect();
        all.sort_by_key(|i| !i.is_healthy());
        all.iter()
            .map(|i| i.url().trim_end_matches('/').to_owned())
            .collect()
    }

    /// Calls `path` on an instance of `upstream`, trying the next instance when one cannot be
    /// reached.
    async fn call(
        &self,
        upstream: &str,
        path: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Problem> {
        let method = reqwest::Method::POST;
        self.call_as(upstream, method, path, build).await
    }

    async fn call_as(
        &self,
        upstream: &str,
        method: reqwest::Method,
        path: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Problem> {
        for base in self.instances_of(upstream) {
            let request = build(
                self.clients
                    .to(upstream)
                    .request(method.clone(), format!("{base}{path}")),
            );
            if let Ok(response) = request.send().await {
                return Ok(response);
            }
        }
        Err(Problem::unavailable(format!("{upstream} cannot be reached"), 1))
    }
}

/// The console's routes; the sampler runs beside the server (see [`Sampler::run`]).
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/console", get(assets::index))
        .route("/console/", get(assets::index))
        .route("/console/assets/{file}", get(assets::file))
        .route(
            "/console/api/session",
            post(pages::sign_in).get(pages::session).delete(pages::sign_out),
        )
        .route("/console/api/session/refresh", post(pages::refresh))
        .route("/console/api/system", get(pages::system))
        .route("/console/api/traffic", get(pages::traffic))
        .route("/console/api/traffic/{name}", put(pages::switch))
        .route("/console/api/orders", get(pages::find_orders))
        .route("/console/api/orders/{id}", get(pages::order))
        .route("/console/api/funnel", get(pages::funnel))
        .route("/console/api/messages", get(pages::messages))
        .route("/console/api/messages/{service}/{id}/replay", post(pages::replay))
        .route("/console/api/{*rest}", any(pages::unknown))
        .layer(axum::middleware::map_response(assets::secure_headers))
        .with_state(console)
}
