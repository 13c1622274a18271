//! A test service on a free loopback port, and helpers to check its answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use mercato_runtime::correlation::{CorrelationId, HEADER};
use mercato_runtime::{CancellationToken, HttpConfig, Readiness, Registry, Server, Service};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use mercato_testkit::PATIENCE;
use mercato_testkit::service::Api;

/// How a test controls `/slow`: the handler signals `entered`, then waits for `release`.
#[derive(Clone, Default)]
pub struct Gates {
    pub entered: Arc<Notify>,
    pub release: Arc<Notify>,
}

/// What a test may change about the service it spawns.
pub struct Options {
    pub config: HttpConfig,
    pub readiness: Readiness,
    /// Routes merged with the standard test routes.
    pub routes: Router,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: HttpConfig::default(),
            readiness: Readiness::new(),
            routes: Router::new(),
        }
    }
}

/// A running test service.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `base_url`, `url`, `get`, `post` and the `http` client, reached through `Deref`.
    pub api: Api,
    pub shutdown: CancellationToken,
    pub gates: Gates,
    /// The server task: ends when `run_until_stopped` returns.
    pub stopped: JoinHandle<std::io::Result<()>>,
}

mercato_testkit::deref_to_api!(TestApp);

impl TestApp {
    /// Waits until `/slow` has been entered by a request.
    pub async fn slow_request_started(&self) {
        tokio::time::timeout(PATIENCE, self.gates.entered.notified())
            .await
            .expect("the slow handler was never entered");
    }

    /// GETs `path` with `ms` left before the caller's deadline and checks that the answer is the
    /// `504` deadline problem, given no sooner than the deadline.
    pub async fn expect_deadline_exceeded(&self, path: &str, ms: u64) {
        let started = Instant::now();
        let response = self
            .get_with_header(path, "x-request-deadline-ms", &ms.to_string())
            .await;
        let elapsed = started.elapsed();
        expect_problem(response, 504, "deadline-exceeded").await;
        assert!(elapsed >= Duration::from_millis(ms), "{elapsed:?}");
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let gates = Gates::default();
    let service = Service {
        name: "runtime-it",
        routes: test_routes(gates.clone()).merge(options.routes),
        readiness: options.readiness,
        registry: Registry::default(),
        own_fallback: false,
    };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), &options.config, service)
        .await
        .expect("bind a loopback port");
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let stopped = tokio::spawn(server.run_until_stopped(shutdown.clone()));
    TestApp {
        addr,
        api: Api::new(addr),
        shutdown,
        gates,
        stopped,
    }
}

/// The body `/orders` takes: both fields are required.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewOrder {
    pub sku: String,
    pub quantity: u32,
}

/// A body with nested required fields.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewCart {
    pub lines: Vec<NewOrder>,
}

fn test_routes(gates: Gates) -> Router {
    Router::new()
        .route("/echo", get(echo))
        .route("/items/{id}", get(item))
        .route("/orders", post(create_order))
        .route("/carts", post(create_cart))
        .route("/slow", get(slow))
        .route("/never", get(never))
        .route("/panic", get(panics))
        .with_state(gates)
}

/// The correlation id the handler saw, in its header and as the task's current id.
async fn echo(headers: HeaderMap) -> axum::Json<Value> {
    axum::Json(json!({
        "header": headers.get(HEADER).and_then(|v| v.to_str().ok()),
        "current": CorrelationId::current().map(|id| id.as_str().to_owned()),
    }))
}

async fn item(Path(id): Path<u64>) -> axum::Json<Value> {
    axum::Json(json!({ "id": id }))
}

async fn create_order(
    mercato_runtime::Json(order): mercato_runtime::Json<NewOrder>,
) -> (StatusCode, mercato_runtime::Json<NewOrder>) {
    (StatusCode::CREATED, mercato_runtime::Json(order))
}

async fn create_cart(
    mercato_runtime::Json(cart): mercato_runtime::Json<NewCart>,
) -> (StatusCode, mercato_runtime::Json<NewCart>) {
    (StatusCode::CREATED, mercato_runtime::Json(cart))
}

async fn slow(State(gates): State<Gates>) -> &'static str {
    gates.entered.notify_one();
    gates.release.notified().await;
    "finished"
}

async fn never() -> StatusCode {
    std::future::pending().await
}

async fn panics() -> &'static str {
    panic!("this handler fails on purpose")
}

/// Checks that `response` is a problem document of `status` and type `slug` that carries the
/// correlation id too, and returns its body.
pub async fn expect_problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert!(
        response.headers().contains_key(HEADER),
        "a problem answer carries the correlation id too",
    );
    mercato_testkit::problem::expect_problem_of(response, status, slug).await
}

/// The `x-correlation-id` of a response.
pub fn correlation_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(HEADER)
        .expect("every response carries x-correlation-id")
        .to_str()
        .unwrap()
        .to_owned()
}
