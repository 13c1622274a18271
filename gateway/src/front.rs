//! Where a client's request goes first: the gateway's own endpoints (the runtime's probes and
//! metrics, the admin API, the console, the OpenAPI document) through axum's router, every other
//! path straight to the proxy under the same middleware the router runs it under (correlation
//! id, span, metrics, the declared body size, panics caught as a `500` problem).
//!
//! The router would hand those paths to the proxy as well, as its fallback, but only after
//! matching the path against every route and cloning and boxing a route service per request:
//! more work than the rest of the middleware together, for the answer known from the path alone.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use futures_util::future::{BoxFuture, Either};
use mercato_runtime::observe::{Observe, ObserveLayer};
use tower::util::Oneshot;
use tower::{Layer as _, Service as _, ServiceExt as _};

use crate::proxy::{Forwarding, Proxy};

/// The paths the router serves, each with every path below it. A path outside them can only
/// reach the router's fallback, the proxy; one inside still reaches the proxy through it when
/// no route of the router matches, so this list may be wider than the routes, never narrower.
const OWN: [&str; 6] = [
    "/health",
    "/ready",
    "/metrics",
    "/admin",
    "/console",
    "/api/openapi.json",
];

/// Whether `path` is one of [`OWN`] or below one, by whole segments.
fn is_own(path: &str) -> bool {
    OWN.iter().any(|own| {
        path.strip_prefix(own)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The service of every client request: see the module's documentation.
#[derive(Clone)]
pub struct Front {
    router: Router,
    observe: ObserveLayer,
    proxy: Proxy,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").finish_non_exhaustive()
    }
}

impl Front {
    /// `router` as the runtime assembled it (its routes under `observe`), and the proxy its
    /// fallback is.
    #[must_use]
    pub fn new(router: Router, observe: ObserveLayer, proxy: Proxy) -> Self {
        Self {
            router,
            observe,
            proxy,
        }
    }

    /// The service of the requests of one client connection, from `peer`.
    #[must_use]
    pub fn connection(&self, peer: SocketAddr) -> Connection {
        Connection {
            peer,
            router: self.router.clone(),
            proxy: self.observe.layer(self.proxy.clone().service_for(peer)),
        }
    }
}

/// See [`Front::connection`].
#[derive(Clone)]
pub struct Connection {
    peer: SocketAddr,
    router: Router,
    proxy: Observe<Forwarding>,
}

impl Connection {
    /// Serves one request. Only the router's requests carry the client's address as an
    /// extension (its handlers extract it); the proxy was given it with the connection.
    pub fn serve(
        &self,
        mut request: Request,
    ) -> Either<Oneshot<Router, Request>, BoxFuture<'static, Result<Response, Infallible>>> {
        if is_own(request.uri().path()) {
            request.extensions_mut().insert(ConnectInfo(self.peer));
            Either::Left(self.router.clone().oneshot(request))
        } else {
            // Always ready: neither the middleware nor the proxy waits for capacity here.
            Either::Right(self.proxy.clone().call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_own_paths_are_whole_segments() {
        for own in [
            "/health",
            "/ready",
            "/metrics",
            "/admin/upstreams",
            "/admin/upstreams/echo/instances",
            "/console",
            "/console/",
            "/console/api/traffic",
            "/api/openapi.json",
        ] {
            assert!(is_own(own), "{own}");
        }
        for proxied in [
            "/",
            "/healthz",
            "/readyz",
            "/metricsx",
            "/administration",
            "/consoles",
            "/api/openapi.jsonx",
            "/api/orders",
            "/api/health",
        ] {
            assert!(!is_own(proxied), "{proxied}");
        }
    }
}
