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

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post, put};
use mercato_runtime::Problem;
use mercato_security::Verifier;

use crate::admin::Admin;
use crate::config::{ConsoleConfig, RateClassConfig};
use crate::upstream::{Group, Upstreams};
use sampler::Sampler;

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    upstreams: Upstreams,
    verifier: Verifier,
    admin: Admin,
    http: reqwest::Client,
    config: Arc<ConsoleConfig>,
    rate_classes: Arc<std::collections::BTreeMap<String, RateClassConfig>>,
    sampler: Sampler,
}

impl Console {
    pub(crate) fn new(
        admin: Admin,
        verifier: Verifier,
        config: &ConsoleConfig,
        rate_classes: std::collections::BTreeMap<String, RateClassConfig>,
        call_timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(call_timeout)
            .build()
            .unwrap_or_default();
        let upstreams = admin.upstreams().clone();
        let sampler = Sampler::new(
            upstreams.clone(),
            http.clone(),
            Duration::from_millis(config.sample_interval_ms),
            config.samples,
        );
        Self {
            upstreams,
            verifier,
            admin,
            http,
            config: Arc::new(config.clone()),
            rate_classes: Arc::new(rate_classes),
            sampler,
        }
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
            let request = build(self.http.request(method.clone(), format!("{base}{path}")));
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
