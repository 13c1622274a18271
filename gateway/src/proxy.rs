//! Forwarding a request to its upstream.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use mercato_resilience::{Deadline, ResilienceError, deadline};
use mercato_runtime::correlation::{self, CorrelationId};
use mercato_runtime::observe::{LabelledResponse, UNMATCHED};
use mercato_runtime::{ClientConfig, Problem, auth};
use mercato_security::{TokenError, Verifier};

use crate::config::{GatewayConfig, RouteAuth};
use crate::edge::{ClientBodyError, IdleBody};
use crate::forwarded::TrustedProxies;
use crate::preauth::Preauth;
use crate::rate_limit::gcra::{Decision, ceil_secs};
use crate::rate_limit::{Caller, RateLimiter};
use crate::rbac::{self, Rules};
use crate::resilience::{Outgoing, Resilience, TransportError};
use crate::routes::RouteTable;
use crate::upstream::Upstreams;
use crate::upstream::connections::{PoolSettings, SendError, UpstreamBody};
use crate::upstream::http1::HOP_BY_HOP_NAMES;
use crate::{ROLES_HEADER, SUBJECT_HEADER, StartError};
use tracing::Instrument as _;

const HOPS: usize = 8;
/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), in the order of
/// [`HOP_BY_HOP_NAMES`] (the same as text, to compare a name's length before its bytes). Header
/// names rather than strings: a string is parsed into a name again on every use. A static, so
/// that looking through it does not build the array again.
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const SUBJECT: HeaderName = HeaderName::from_static(SUBJECT_HEADER);
const ROLES: HeaderName = HeaderName::from_static(ROLES_HEADER);
pub(crate) const DEADLINE: HeaderName = HeaderName::from_static(deadline::HEADER);
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// How proxied requests and health checks open and keep upstream connections: bounded connect
/// time, idle connections kept for reuse ([`crate::upstream::connections`]).
#[must_use]
pub fn pool_settings(gateway: &GatewayConfig, client: &ClientConfig) -> PoolSettings {
    PoolSettings {
        connect_timeout: Duration::from_millis(gateway.connect_timeout_ms),
        idle_timeout: Duration::from_millis(client.pool_idle_timeout_ms),
        max_idle: gateway.pool_max_idle_per_host,
    }
}

/// The proxy's shared state.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    routes: RouteTable,
    verifier: Verifier,
    rules: Rules,
    limiter: Option<Arc<RateLimiter>>,
    preauth: Option<Preauth>,
    resilience: Resilience,
    proxies: TrustedProxies,
    upstream_timeout: Duration,
    body_limit: usize,
    body_idle_timeout: Duration,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("routes", &self.inner.routes)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// The proxy, opening and keeping upstream connections as `pool` says.
    ///
    /// # Errors
    /// Invalid `[gateway.bulkhead]` or `[gateway.retry]` settings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        routes: RouteTable,
        upstreams: Upstreams,
        verifier: Verifier,
        rules: Rules,
        limiter: Option<Arc<RateLimiter>>,
        preauth: Option<Preauth>,
        gateway: &GatewayConfig,
        pool: PoolSettings,
        body_limit: usize,
        limits: std::collections::BTreeMap<String, Arc<crate::adaptive::AdaptiveLimit>>,
    ) -> Result<Self, StartError> {
        let resilience = Resilience::new(gateway, pool, upstreams, limits)?;
        let proxies =
            TrustedProxies::parse(&gateway.trusted_proxies).map_err(|(i, message)| StartError::Config {
                key: format!("gateway.trusted_proxies[{i}]"),
                message,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                routes,
                verifier,
                rules,
                limiter,
                preauth,
                resilience,
                proxies,
                upstream_timeout: Duration::from_millis(gateway.upstream_timeout_ms),
                body_limit,
                body_idle_timeout: Duration::from_millis(gateway.edge.body_idle_timeout_ms),
            }),
        })
    }

    /// Every path not served by the runtime itself goes through the proxy: a service of its own
    /// rather than a handler, as a proxied request needs none of a handler's extractors.
    pub fn router(self) -> Router {
        Router::new()
            .route("/api/openapi.json", axum::routing::get(crate::openapi::serve))
            .fallback_service(self.service())
    }

    /// The proxy as a service, catching its own panics (a `500` problem) as the runtime's router
    /// does around every route, so that it can also serve without the router. It finds the
    /// client's address among a request's extensions (`ConnectInfo`, which the edge sets for
    /// the router).
    #[must_use]
    pub fn service(self) -> Forwarding {
        Forwarding {
            proxy: self,
            peer: None,
        }
    }

    /// [`service`](Self::service) for the requests of one client connection, from `peer`: no
    /// extension per request to carry the address.
    #[must_use]
    pub fn service_for(self, peer: SocketAddr) -> Forwarding {
        Forwarding {
            proxy: self,
            peer: Some(peer),
        }
    }
}

/// See [`Proxy::service`].
#[derive(Debug, Clone)]
pub struct Forwarding {
    proxy: Proxy,
    peer: Option<SocketAddr>,
}

impl tower::Service<Request> for Forwarding {
    type Response = LabelledResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<LabelledResponse, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let proxy = self.proxy.clone();
        let peer = self.peer;
        // Boxed: the whole exchange's state is large, and every layer above moves its future.
        Box::pin(async move {
            let forwarded = AssertUnwindSafe(forward(&proxy, peer, request))
                .catch_unwind()
                .await;
            Ok(forwarded.unwrap_or_else(|_| unlabelled(Problem::internal())))
        })
    }
}

fn labelled(response: Response, label: &Arc<str>) -> LabelledResponse {
    LabelledResponse {
        response,
        route: Some(Arc::clone(label)),
    }
}

fn unlabelled(problem: Problem) -> LabelledResponse {
    LabelledResponse {
        response: problem.into_response(),
        route: None,
    }
}

async fn forward(proxy: &Proxy, peer: Option<SocketAddr>, request: Request) -> LabelledResponse {
    let inner = &proxy.inner;
    // Known to the edge's connection loop, which passes it on.
    let connected = || request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let Some(peer) = peer.or_else(connected) else {
        tracing::error!("a request without its client's address reached the proxy");
        return unlabelled(Problem::internal());
    };
    if has_dot_segment(request.uri().path()) {
        // A route is chosen by its path; an upstream that resolved `..` could be led past it.
        let label: Arc<str> = UNMATCHED.into();
        return labelled(
            Problem::bad_request("the path must not contain . or .. segments").into_response(),
            &label,
        );
    }
    let Some(route) = inner.routes.find(request.uri().path()).cloned() else {
        let label: Arc<str> = UNMATCHED.into();
        return labelled(
            Problem::not_found("no route serves this path").into_response(),
            &label,
        );
    };
    let response = forward_to(inner, &route, peer, request).await;
    labelled(response, &route.prefix)
}

async fn forward_to(
    inner: &Inner,
    route: &crate::routes::Route,
    peer: SocketAddr,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    // First, so that a client's `Connection` header cannot name the headers the gateway sets.
    let listed = strip_hop_by_hop(&mut parts.headers);
    // The runtime set it; put back only if the client's `Connection` named it.
    if listed
        && let Some(id) = CorrelationId::current()
        && !parts.headers.contains_key(correlation::NAME)
    {
        parts.headers.insert(correlation::NAME, id.header_value());
    }
    // Only the gateway may say who the caller is, and how long it waits: the deadline is set
    // here, at the edge, never taken from a client.
    remove_present(&mut parts.headers, &OWNED, &OWNED_NAMES);
    let client = inner.proxies.client(peer.ip(), &parts.headers);
    let required_roles = inner.rules.requirements(route, &parts.method, parts.uri.path());
    let needs_token = route.auth == RouteAuth::Required || !required_roles.is_empty();
    // An offered token is verified on public routes too, only to limit its subject rather than
    // its IP; a bad one there is ignored as before.
    let offered = parts.headers.contains_key(header::AUTHORIZATION);
    let authenticated = if needs_token || offered {
        authenticate(inner, client, &parts.headers, needs_token).await
    } else {
        None
    };
    let claims = match &authenticated {
        Some(Ok(claims)) => Some(claims),
        _ => None,
    };
    // Before the authentication verdict, so that refused tokens are limited (by IP) as well.
    let decision = match &inner.limiter {
        Some(limiter) => {
            let caller = claims.map_or(Caller::Ip(client), |c| Caller::Subject(&c.sub));
            limiter.check(&route.class, caller).await
        }
        None => None,
    };
    let span = crate::trace::proxy_span(&route.upstream, &parts.method, &mut parts.headers);
    let result = admit(
        inner,
        route,
        peer,
        client,
        parts,
        body,
        needs_token.then_some(authenticated).flatten(),
        &required_roles,
        decision.as_ref(),
    )
    .instrument(span)
    .await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(decision) = &decision {
        add_rate_limit_headers(response.headers_mut(), decision);
    }
    response
}

/// Verifies the request's token unless its address has failed too often (then `429` where a
/// token is needed, and no verification where it is not); counts the failures.
async fn authenticate(
    inner: &Inner,
    client: IpAddr,
    headers: &HeaderMap,
    needs_token: bool,
) -> Option<Result<Arc<mercato_security::Claims>, Problem>> {
    let preauth = inner.preauth.as_ref();
    if let Some(preauth) = preauth
        && let Err(retry_after) = preauth.admit(client)
    {
        return needs_token.then(|| Err(too_many_failures(retry_after)));
    }
    let failed = || {
        if let Some(preauth) = preauth {
            preauth.failed(client);
        }
    };
    let token = match auth::bearer_token(headers) {
        Ok(Some(token)) => token,
        Ok(None) => {
            return Some(Err(Problem::unauthorized(
                "this resource needs a bearer token",
                false,
            )));
        }
        Err(problem) => {
            failed();
            return Some(Err(problem));
        }
    };
    // A token verified before is found by its bytes, which costs less than screening it; the
    // screen is for the tokens that would otherwise reach a signature check.
    let verified = match inner.verifier.verify_known(token).await {
        Some(known) => known,
        None if preauth.is_some_and(|preauth| !preauth.screen(token)) => {
            failed();
            return Some(Err(auth::token_problem(&TokenError::Malformed)));
        }
        None => inner.verifier.verify_unknown(token).await,
    };
    Some(verified.map_err(|error| {
        if !error.is_transient() {
            failed();
        }
        auth::token_problem(&error)
    }))
}

fn too_many_failures(retry_after: Duration) -> Problem {
    let retry_after = ceil_secs(retry_after).max(1);
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-failed-authentications",
        "Too many failed authentications",
    )
    .with_detail(format!(
        "too many bad tokens came from this address; retry in {retry_after} s"
    ))
    .with_header(header::RETRY_AFTER, &retry_after.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn admit(
    inner: &Inner,
    route: &crate::routes::Route,
    peer: SocketAddr,
    client: IpAddr,
    mut parts: http::request::Parts,
    body: Body,
    authenticated: Option<Result<Arc<mercato_security::Claims>, Problem>>,
    required_roles: &[Arc<[Arc<str>]>],
    decision: Option<&Decision>,
) -> Result<Response, Problem> {
    if let Some(decision) = decision.filter(|d| !d.allowed) {
        tracing::debug!(%client, class = %route.class, "rate limited");
        return Err(rate_limited(&route.class, decision));
    }
    if let Some(authenticated) = authenticated {
        let claims = authenticated?;
        rbac::authorize(required_roles, &claims.roles)?;
        let subject = HeaderValue::from_str(&claims.sub)
            .map_err(|_| Problem::unauthorized("the token's subject is not usable", true))?;
        parts.headers.insert(SUBJECT, subject);
        if let Ok(roles) = HeaderValue::from_str(&claims.roles.join(",")) {
            parts.headers.insert(ROLES, roles);
        }
    }
    inner.proxies.rewrite(&mut parts.headers, peer);
    add_forwarded(&mut parts.headers);

    // The transport adds the instance, picked per attempt. A request line in origin form (all
    // but proxies send one) is already just the path and query.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| Problem::bad_request("the request path is invalid"))?;
    }
    parts.version = Version::HTTP_11;

    // A request without a body (most are) skips the limits a body is read under, and the
    // allocation that boxes them.
    let body = if http_body::Body::is_end_stream(&body) {
        Body::empty()
    } else {
        Body::new(Limited::new(
            IdleBody::new(body, inner.body_idle_timeout),
            inner.body_limit,
        ))
    };
    let timeout = route.timeout.unwrap_or(inner.upstream_timeout);
    // The whole exchange, retries included, ends by the deadline; the upstream learns it from
    // `x-request-deadline-ms`.
    let outgoing = Outgoing::new(http::Request::from_parts(parts, body), Deadline::after(timeout));
    let result = inner.resilience.call(&route.upstream, outgoing, timeout).await;
    let response = result.map_err(|error| call_failure(&route.upstream, timeout, error))?;
    Ok(relay(response))
}

fn relay(response: http::Response<UpstreamBody>) -> Response {
    let (mut parts, body) = response.into_parts();
    let _ = strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body.map_err(axum::Error::new)))
}

/// The problem for a call that produced no upstream answer.
fn call_failure(upstream: &str, timeout: Duration, error: ResilienceError<TransportError>) -> Problem {
    match error {
        ResilienceError::Inner(TransportError::Http(error)) => upstream_failure(upstream, &error),
        ResilienceError::Inner(TransportError::Shed) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream-overloaded",
            "Upstream at its concurrency limit",
        )
        .with_detail(format!(
            "{upstream} has as many requests as it can serve quickly; retry shortly"
        ))
        .with_header(header::RETRY_AFTER, "1"),
        ResilienceError::Inner(TransportError::NoInstance) => {
            Problem::unavailable(format!("no instance of {upstream} is configured"), 5)
        }
        ResilienceError::CircuitOpen { retry_after, .. } => {
            tracing::debug!(%upstream, ?retry_after, "circuit open: request refused");
            Problem::unavailable(
                format!("{upstream} is failing; the gateway sends it no requests for now"),
                ceil_secs(retry_after).max(1),
            )
        }
        ResilienceError::BudgetExhausted { last, .. } => call_failure(upstream, timeout, *last),
        ResilienceError::TimedOut(_) | ResilienceError::DeadlineExceeded => {
            tracing::warn!(%upstream, timeout_ms = timeout.as_millis(), "upstream timed out");
            Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "Upstream timed out",
            )
            .with_detail(format!("{upstream} did not answer in time"))
        }
        ResilienceError::BulkheadFull { .. } => Problem::unavailable(format!("{upstream} is busy"), 1),
    }
}

fn rate_limited(class: &str, decision: &Decision) -> Problem {
    let retry_after = decision.retry_after.map_or(1, ceil_secs).max(1);
    Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
        .with_detail(format!(
            "the {class} rate limit is used up; retry in {retry_after} s"
        ))
        .with_header(header::RETRY_AFTER, &retry_after.to_string())
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` (IETF httpapi draft, header-per-field form).
fn add_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.reserve(3);
    headers.insert(RATELIMIT_LIMIT, number(u64::from(decision.limit)));
    headers.insert(RATELIMIT_REMAINING, number(u64::from(decision.remaining)));
    headers.insert(RATELIMIT_RESET, number(ceil_secs(decision.reset)));
}

/// A number as a header value; a single digit (a reset in seconds, usually) without allocating.
fn number(n: u64) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match usize::try_from(n).ok().and_then(|i| DIGITS.get(i)) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(n),
    }
}

fn upstream_failure(upstream: &str, error: &SendError) -> Problem {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<LengthLimitError>() {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            );
        }
        // The client's fault, not the upstream's; the connection cannot carry another request.
        match e.downcast_ref::<ClientBodyError>() {
            Some(ClientBodyError::Idle(_)) => {
                return Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    "Request body too slow",
                )
                .with_detail(e.to_string())
                .with_header(header::CONNECTION, "close");
            }
            Some(ClientBodyError::Broken(_)) => {
                return Problem::bad_request("the request body is malformed or incomplete")
                    .with_header(header::CONNECTION, "close");
            }
            None => {}
        }
        source = e.source();
    }
    let connect = matches!(error, SendError::Connect { .. });
    tracing::warn!(%upstream, %error, connect, "upstream request failed");
    Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Upstream unavailable")
        .with_detail(format!("{upstream} could not be reached"))
        .with_header(header::RETRY_AFTER, "1")
}

/// The request headers only the gateway sets, and their names as text.
static OWNED: [HeaderName; 3] = [SUBJECT, ROLES, DEADLINE];
static OWNED_NAMES: [&str; 3] = [SUBJECT_HEADER, ROLES_HEADER, deadline::HEADER];

/// Where `name` (lowercase, as header names are) is in `names`.
fn index_in(names: &[&str], name: &str) -> Option<usize> {
    names
        .iter()
        .position(|known| known.len() == name.len() && *known == name)
}

fn hop_index(name: &str) -> Option<usize> {
    index_in(&HOP_BY_HOP_NAMES, name)
}

/// Removes those of `names` (`text`, the same as text) that `headers` has, looking at each
/// header once rather than looking each name up.
fn remove_present<const N: usize>(headers: &mut HeaderMap, names: &[HeaderName; N], text: &[&str; N]) {
    let mut present = [false; N];
    for name in headers.keys() {
        if let Some(i) = index_in(text, name.as_str()) {
            present[i] = true;
        }
    }
    for (name, present) in names.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

/// Drops the hop-by-hop headers and those a `Connection` header lists; true when one did.
fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // Most requests carry none and most answers only `Connection`: the few names present are
    // looked at once, and only those found are removed.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = hop_index(name.as_str()) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return false;
    }
    let mut connection = headers.get_all(header::CONNECTION).iter();
    let listed = match (connection.next().cloned(), connection.next()) {
        (None, _) => false,
        // One `Connection` header (the usual case): its value is shared, not copied.
        (Some(value), None) => remove_listed(headers, &[value]),
        (Some(_), Some(_)) => {
            let values: Vec<HeaderValue> = headers.get_all(header::CONNECTION).iter().cloned().collect();
            remove_listed(headers, &values)
        }
    };
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    listed
}

/// Removes the headers a `Connection` header lists (RFC 9110 §7.6.1), found by their names as
/// written, without making header names of them; true when it lists any but hop-by-hop names.
fn remove_listed(headers: &mut HeaderMap, connection: &[HeaderValue]) -> bool {
    // The hop-by-hop names themselves (`Connection: keep-alive`, the usual answer's) are removed
    // by the caller when present, without being parsed into names here.
    let listed = connection
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| {
            !name.is_empty() && !HOP_BY_HOP_NAMES.iter().any(|hop| hop.eq_ignore_ascii_case(name))
        });
    let mut any = false;
    for name in listed {
        headers.remove(name);
        any = true;
    }
    any
}

fn add_forwarded(headers: &mut HeaderMap) {
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

/// True when a segment is `.` or `..`, also percent-encoded (`%2e`, `%2E`).
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(is_dot_segment)
}

/// `.` or `..`, each dot plain or `%2e`; read in place, as every request pays for it.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() && dots < 3 {
        if let Some(after) = rest.strip_prefix(b".") {
            rest = after;
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    rest.is_empty() && (dots == 1 || dots == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_also_when_encoded() {
        assert!(has_dot_segment("/api/echo/../private"));
        assert!(has_dot_segment("/api/echo/%2e%2E/private"));
        assert!(has_dot_segment("/api/./x"));
        assert!(!has_dot_segment("/api/echo/file.txt"));
        assert!(!has_dot_segment("/api/echo/...x"));
        assert!(!has_dot_segment("/api/echo/..."));
        assert!(!has_dot_segment("/api/echo/%2e%2e%2e"));
        assert!(!has_dot_segment("/api/echo/%2"));
        assert!(!has_dot_segment("/"));
        assert!(has_dot_segment("/api/.%2E"));
        assert!(has_dot_segment(".."));
    }

    #[test]
    fn numbers_become_header_values() {
        for n in [0, 1, 9, 10, 59, 1_000_000, u64::MAX] {
            assert_eq!(number(n), HeaderValue::from(n));
        }
    }

    #[test]
    fn the_host_becomes_x_forwarded_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        add_forwarded(&mut h);
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get(header::HOST).is_none());
    }

    #[test]
    fn the_hop_by_hop_names_as_text_are_the_header_names() {
        for (name, text) in HOP_BY_HOP.iter().zip(HOP_BY_HOP_NAMES) {
            assert_eq!(name.as_str(), text);
            assert_eq!(hop_index(text).map(|i| &HOP_BY_HOP[i]), Some(name));
        }
        assert_eq!(hop_index("x-connection"), None);
        assert_eq!(hop_index("host"), None);
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let mut h = HeaderMap::new();
        // Listed names in any case, hop-by-hop ones among them.
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, Upgrade, X-Secret-Hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert!(
            strip_hop_by_hop(&mut h),
            "a name other than a hop-by-hop one was listed"
        );
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.get("x-kept").is_some());
    }
}
