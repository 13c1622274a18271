//! The gateway under test with what it talks to, each a real server on a free loopback port: a JWKS
//! server whose key set a test can change and whose fetches it can count, and upstreams that echo
//! what reached them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{StatusCode, header};
use mercato_gateway::{Clock, Config, GatewayConfig, HealthCheckConfig, RouteAuth, RouteConfig, SystemClock};
use mercato_runtime::{CancellationToken, ClientConfig, HttpConfig};
use mercato_security::{Claims, JwkSet, SigningKey, VerifierConfig};
use serde_json::{Value, json};

pub use mercato_testkit::PATIENCE;
use mercato_testkit::metrics::Exposition;
pub use mercato_testkit::problem::expect_problem_of;
use mercato_testkit::ready::Readiness;
use mercato_testkit::service::Api;

/// The routes every test gateway has: public and authenticated prefixes, nested so that the
/// longest prefix decides both the upstream and whether a token is needed.
pub fn standard_routes() -> Vec<RouteConfig> {
    let route = RouteConfig::new;
    vec![
        route("/api/echo", "echo", RouteAuth::Public),
        route("/api/echo/special", "other", RouteAuth::Public),
        route("/api/private", "echo", RouteAuth::Required),
        route("/api/private/status", "echo", RouteAuth::Public),
    ]
}

/// A JWKS endpoint serving `{"keys": [...]}` at `/.well-known/jwks.json`.
pub struct KeyServer {
    pub url: String,
    set: Arc<RwLock<JwkSet>>,
    fetches: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct KeyState {
    set: Arc<RwLock<JwkSet>>,
    fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    pub async fn serving(keys: &[&SigningKey]) -> Self {
        let set = Arc::new(RwLock::new(JwkSet {
            keys: keys.iter().map(|k| k.public.clone()).collect(),
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let state = KeyState {
            set: Arc::clone(&set),
            fetches: Arc::clone(&fetches),
        };
        let router = Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(state);
        let base = serve(router).await;
        Self {
            url: format!("{base}/.well-known/jwks.json"),
            set,
            fetches,
        }
    }

    /// Adds `key` to the published set, as the identity service does after a rotation.
    pub fn publish(&self, key: &SigningKey) {
        self.set.write().unwrap().keys.push(key.public.clone());
    }

    /// How many times the set has been fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(state): State<KeyState>) -> axum::Json<JwkSet> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(state.set.read().unwrap().clone())
}

/// An upstream service. Every path echoes the request as JSON, except paths ending in `/never`,
/// which never answer, and `/download?bytes=N`, which streams `N` bytes of [`pattern`].
pub struct Upstream {
    pub url: String,
    hits: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct UpstreamState {
    name: &'static str,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn spawn(name: &'static str) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let state = UpstreamState {
            name,
            hits: Arc::clone(&hits),
        };
        let url = serve(Router::new().fallback(upstream).with_state(state)).await;
        Self { url, hits }
    }

    /// How many requests reached this upstream.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The byte at `offset` of a streamed download.
pub fn pattern(offset: usize) -> u8 {
    u8::try_from(offset % 251).unwrap()
}

const DOWNLOAD_CHUNK: usize = 64 * 1024;

async fn upstream(State(state): State<UpstreamState>, request: Request) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    if path.ends_with("/never") {
        return std::future::pending().await;
    }
    if path.ends_with("/download") {
        let total: usize = request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("bytes="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let chunks = (0..total).step_by(DOWNLOAD_CHUNK).map(move |start| {
            let chunk: Vec<u8> = (start..(start + DOWNLOAD_CHUNK).min(total))
                .map(pattern)
                .collect();
            Ok::<_, std::io::Error>(Bytes::from(chunk))
        });
        return (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from_stream(futures_util::stream::iter(chunks)),
        )
            .into_response();
    }
    echo(state.name, request).await
}

/// Answers `200` with what reached the upstream `name`: method, URI, headers, body length, and
/// whether the body is [`pattern`]'s bytes.
pub async fn echo(name: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    axum::Json(json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "uri": parts.uri.path_and_query().map(http::uri::PathAndQuery::as_str),
        "headers": headers,
        "body_len": body.len(),
        "body_matches_pattern": body.iter().enumerate().all(|(i, b)| *b == pattern(i)),
    }))
    .into_response()
}

/// Serves `router` on a free loopback port until the test's runtime ends; returns its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// A base URL on which nothing listens.
pub fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A running gateway with its JWKS server and two upstreams, `echo` and `other`.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// `url`, `get`, `post` and the `http` client, reached through `Deref`.
    pub api: Api,
    pub keys: KeyServer,
    /// A key the JWKS server publishes from the start.
    pub signer: SigningKey,
    pub echo: Upstream,
    pub other: Upstream,
    /// Cancelling it shuts the gateway down; `server` then ends.
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A gateway with [`standard_routes`] and default settings.
pub async fn spawn_gateway() -> TestGateway {
    spawn_gateway_with(|_| {}).await
}

/// A gateway whose configuration `adjust` may change before it is built.
pub async fn spawn_gateway_with(adjust: impl FnOnce(&mut Config)) -> TestGateway {
    spawn_gateway_with_clock(Arc::new(SystemClock), adjust).await
}

/// A gateway whose `echo` upstream is the instances at `urls`; `adjust` may change the rest.
pub async fn spawn_gateway_over(urls: Vec<String>, adjust: impl FnOnce(&mut Config)) -> TestGateway {
    spawn_gateway_with(move |config| {
        config.upstreams.insert("echo".into(), urls);
        adjust(config);
    })
    .await
}

/// [`spawn_gateway_with`], its rate limiter reading `clock`.
pub async fn spawn_gateway_with_clock(
    clock: Arc<dyn Clock>,
    adjust: impl FnOnce(&mut Config),
) -> TestGateway {
    let signer = SigningKey::generate();
    let keys = KeyServer::serving(&[&signer]).await;
    let echo = Upstream::spawn("echo").await;
    let other = Upstream::spawn("other").await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http: HttpConfig::default(),
        client: ClientConfig::default(),
        gateway: GatewayConfig {
            routes: standard_routes(),
            // Checks would add requests to the upstreams' hit counts; the load-balancing tests
            // turn them on.
            health_check: HealthCheckConfig {
                enabled: false,
                ..HealthCheckConfig::default()
            },
            // So would the console's sampling of `/ready` and `/metrics`; its tests are the
            // whole system's.
            console: mercato_gateway::ConsoleConfig {
                enabled: false,
                ..mercato_gateway::ConsoleConfig::default()
            },
            ..GatewayConfig::default()
        },
        auth: VerifierConfig::default(),
        upstreams: BTreeMap::from([
            ("echo".to_owned(), vec![echo.url.clone()]),
            ("other".to_owned(), vec![other.url.clone()]),
        ]),
        jwks_url: keys.url.clone(),
        tls: None,
    };
    adjust(&mut config);
    let app = mercato_gateway::build_with_clock(&config, clock)
        .await
        .expect("the test gateway builds");
    let addr = app.local_addr();
    // The server task ends with the test's runtime; nothing needs to stop it earlier.
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestGateway {
        addr,
        api: Api::new(addr),
        keys,
        signer,
        echo,
        other,
        shutdown,
        server,
    }
}

mercato_testkit::deref_to_api!(TestGateway);

impl TestGateway {
    /// Checks that the gateway's metrics hold `sample` (a series, or a series and its value).
    pub async fn expect_metric(&self, sample: &str) {
        let metrics = self.metrics().await;
        assert!(metrics.contains(sample), "no {sample} in {metrics}");
    }

    /// GETs `path`, whose upstream never answers, and checks that the gateway gives up with a
    /// `504` after no less than `timeout_ms`, having sent the request upstream once.
    pub async fn expect_upstream_timeout(&self, path: &str, timeout_ms: u64) {
        let started = Instant::now();
        let response = self.get(path).send().await.unwrap();
        let elapsed = started.elapsed();
        expect_problem_of(response, 504, "upstream-timeout").await;
        assert_eq!(
            self.echo.hits(),
            1,
            "sent upstream once: a timeout is not retried"
        );
        assert!(
            elapsed >= Duration::from_millis(timeout_ms),
            "answered after {elapsed:?}"
        );
    }

    /// Checks that the breaker `name` is in `state`.
    pub async fn expect_breaker(&self, name: &str, state: &str) {
        self.expect_metric(&format!(
            r#"circuit_breaker_state{{name="{name}",state="{state}"}} 1"#
        ))
        .await;
    }

    /// How often the breaker `name` has moved into `state`.
    pub async fn breaker_transitions(&self, name: &str, state: &str) -> f64 {
        Exposition::parse(&self.metrics().await)
            .value(
                "circuit_breaker_transitions_total",
                &[("name", name), ("state", state)],
            )
            .unwrap_or(0.0)
    }

    /// What `/ready` answered.
    pub async fn readiness(&self) -> Readiness {
        Readiness::of(self.get("/ready").send().await.unwrap()).await
    }

    /// A valid access token for `sub` with `roles`, signed by the published key.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        sign(&claims(sub, roles), &self.signer)
    }

    /// A request to the gateway's admin API with an admin's token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(self.token("ops", &["admin"]))
    }

    /// What the upstream saw of a `GET path` sent with `headers`; the answer must be `200`.
    pub async fn seen_upstream(&self, path: &str, headers: &[(&str, &str)]) -> Value {
        let mut request = self.get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        echoed(request.send().await.unwrap()).await
    }

    /// An admin's `method path` with `body` as JSON, sent.
    pub async fn admin_json(&self, method: reqwest::Method, path: &str, body: &Value) -> reqwest::Response {
        self.admin(method, path).json(body).send().await.unwrap()
    }

    /// An admin's `method path` without a body, sent.
    pub async fn admin_call(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.admin(method, path).send().await.unwrap()
    }

    /// Sends `times` GETs of `path`, each of which must be answered `200`.
    pub async fn expect_ok(&self, path: &str, times: usize) {
        self.expect_status(path, 200, times).await;
    }

    /// Sends `times` GETs of `path`, each of which must be answered with `status`.
    pub async fn expect_status(&self, path: &str, status: u16, times: usize) {
        for _ in 0..times {
            let response = self.get(path).send().await.unwrap();
            assert_eq!(response.status(), status, "GET {path}");
        }
    }

    /// The admin API's view of `upstream`.
    pub async fn upstream_view(&self, upstream: &str) -> Value {
        let response = self
            .admin_call(reqwest::Method::GET, &format!("/admin/upstreams/{upstream}"))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The gateway's metrics, as Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}

/// The breaker of the `echo` instance at `url`: breakers are per instance.
pub fn breaker_name(url: &str) -> String {
    format!("echo@{}", url.trim_start_matches("http://"))
}

/// A breaker that judges four calls and lets one probe through after `wait_ms`.
pub fn small_breaker(wait_ms: u64) -> mercato_gateway::CircuitBreakerSettings {
    mercato_gateway::CircuitBreakerSettings {
        sliding_window_size: 4,
        minimum_number_of_calls: 4,
        wait_duration_ms: wait_ms,
        permitted_calls_in_half_open: 1,
        ..mercato_gateway::CircuitBreakerSettings::default()
    }
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address reaches the gateway).
pub fn client_from(ip: std::net::Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .local_address(std::net::IpAddr::V4(ip))
        .build()
        .unwrap()
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims the gateway accepts: its issuer and audience, valid from now for ten minutes.
pub fn claims(sub: &str, roles: &[&str]) -> Claims {
    let now = now_unix();
    let auth = VerifierConfig::default();
    Claims {
        iss: auth.issuer,
        aud: auth.audience,
        sub: sub.into(),
        exp: now + 600,
        iat: now,
        nbf: now,
        jti: format!("{sub}-{now}"),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    }
}

pub fn sign(claims: &Claims, key: &SigningKey) -> String {
    mercato_security::sign(claims, key).expect("a generated key signs")
}

/// One base64url segment of a JWT holding `value` as JSON.
pub fn segment(value: &impl serde::Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A token with any header and signature, for the forgeries a signer would refuse to make.
pub fn forge(header: &Value, claims: &Claims, signature: &[u8]) -> String {
    let signature = URL_SAFE_NO_PAD.encode(signature);
    format!("{}.{}.{signature}", segment(header), segment(claims))
}

/// What the upstream saw of a request that it answered, after checking that the answer is `200`.
pub async fn echoed(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "status of {}", response.url());
    response.json().await.expect("the upstream echoes JSON")
}

/// Every value of header `name` the upstream received.
pub fn seen_header<'a>(seen: &'a Value, name: &str) -> Vec<&'a str> {
    seen["headers"][name]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}
