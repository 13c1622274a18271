//! A service under test on either backend: its fresh database, the bus of that backend (the
//! embedded log in a file, or a private NATS JetStream server beside PostgreSQL), a token
//! issuer, settings for port 0, and the running instances, stopped when dropped.

use std::future::Future;
use std::net::SocketAddr;

use mercato_kit::ServiceSettings;
use mercato_messaging::{Bus, BusConfig, InboxConfig, RelayConfig};
use mercato_runtime::{App, CancellationToken, HttpConfig};
use mercato_security::ServiceTokensConfig;
use mercato_storage::DatabaseConfig;
use tokio::task::JoinHandle;

use crate::auth::TestIssuer;
use crate::nats::NatsServer;
use crate::{PATIENCE, TestBackend, TestDatabase};

/// What a service under test runs on. Dropping it stops the broker, then drops the database.
pub struct Backing {
    pub issuer: TestIssuer,
    bus_config: BusConfig,
    // Declared last so a private broker stops before its database directory goes.
    nats: Option<NatsServer>,
    database: TestDatabase,
}

impl Backing {
    /// A fresh database on `backend` with the bus that goes with it.
    ///
    /// # Panics
    /// When PostgreSQL or `nats-server` is needed and missing: a backend suite fails, never skips.
    pub async fn new(backend: TestBackend) -> Self {
        let database = TestDatabase::new(backend).await;
        let (nats, url) = match backend {
            TestBackend::Sqlite => (
                None,
                format!("sqlite://{}?mode=rwc", database.dir().join("bus.db").display()),
            ),
            TestBackend::Postgres => {
                let server = NatsServer::start(database.dir()).await;
                let url = server.url();
                (Some(server), url)
            }
        };
        Self {
            issuer: TestIssuer::start().await,
            bus_config: BusConfig {
                url,
                ..BusConfig::default()
            },
            nats,
            database,
        }
    }

    #[must_use]
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    #[must_use]
    pub fn backend(&self) -> TestBackend {
        self.database.backend()
    }

    /// The private NATS server, on the PostgreSQL backend.
    #[must_use]
    pub fn nats(&self) -> Option<&NatsServer> {
        self.nats.as_ref()
    }

    /// The private NATS server, to stop and restart it (a broker outage).
    pub fn nats_mut(&mut self) -> Option<&mut NatsServer> {
        self.nats.as_mut()
    }

    #[must_use]
    pub fn bus_config(&self) -> &BusConfig {
        &self.bus_config
    }

    /// Changes the bus settings for connections made from now on (a shorter ack wait, say).
    pub fn tune_bus(&mut self, change: impl FnOnce(&mut BusConfig)) {
        change(&mut self.bus_config);
    }

    /// A new connection to the bus (each replica of a service has its own).
    ///
    /// # Panics
    /// When the bus cannot be reached.
    pub async fn bus(&self) -> Bus {
        Bus::connect(&self.bus_config).await.expect("connect to the bus")
    }

    /// Settings for a service on a free port over this database, verifying the issuer's tokens,
    /// with a relay and inbox quick enough for tests.
    #[must_use]
    pub fn settings(&self) -> ServiceSettings {
        ServiceSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: HttpConfig::default(),
            database: DatabaseConfig {
                url: self.database.url().into(),
                ..DatabaseConfig::default()
            },
            auth: self.issuer.config(),
            tls: mercato_runtime::tls::TlsConfig::default(),
            jwks_url: self.issuer.jwks_url().to_owned(),
            relay: RelayConfig {
                poll_interval_ms: 50,
                ..RelayConfig::default()
            },
            inbox: InboxConfig {
                backoff_ms: vec![50, 200],
                fetch_wait_ms: 200,
                reorder_delay_ms: 20,
                ..InboxConfig::default()
            },
            service_tokens: ServiceTokensConfig {
                keys_dir: self.database.dir().join("service-keys"),
                ..ServiceTokensConfig::default()
            },
            // No identity runs beside the service: a test that enables service tokens points it
            // at one.
            token_url: "http://127.0.0.1:9/api/identity/token".into(),
        }
    }
}

/// One running instance of a service; dropping it tells the service to stop.
pub struct Instance {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Instance {
    /// Runs a built service (`run` is its `run_until_stopped`) until stopped or dropped.
    pub fn start<F, Fut>(addr: SocketAddr, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Self {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// Runs what a service's `build` returned until stopped or dropped.
    ///
    /// # Panics
    /// When the service could not be built.
    #[track_caller]
    pub fn run<E: std::fmt::Debug>(built: Result<App, E>) -> Self {
        let app = built.unwrap_or_else(|e| panic!("build the service: {e:?}"));
        Self::start(app.local_addr(), |token| app.run_until_stopped(token))
    }

    /// Stops the service and returns what its `run_until_stopped` returned.
    ///
    /// # Panics
    /// When it does not stop within [`PATIENCE`], or was already stopped.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().expect("the service is running");
        crate::joined("run_until_stopped to return", task).await
    }

    /// Stops the service abruptly, as a crash would: no drain, background work cut off; returns
    /// once its task is gone. Nothing of it is told to stop afterwards, as nothing of a killed
    /// process would be: a graceful step (giving back a lease, say) must not run after a crash.
    pub async fn abort(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.shutdown = CancellationToken::new();
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Lets a suite's test app answer [`Api`]'s calls (`url`, `get`, `get_as`, the `http` client …)
/// itself, through `Deref` to its `api` field.
#[macro_export]
macro_rules! deref_to_api {
    ($app:ty) => {
        impl ::std::ops::Deref for $app {
            type Target = $crate::service::Api;

            fn deref(&self) -> &$crate::service::Api {
                &self.api
            }
        }
    };
}

/// A test's client of one service: its base URL and an [`http_client`].
#[derive(Debug, Clone)]
pub struct Api {
    /// `http://host:port`, without a trailing slash.
    pub base_url: String,
    pub http: reqwest::Client,
}

impl Api {
    #[must_use]
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base_url: format!("http://{addr}"),
            http: http_client(),
        }
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path))
    }

    /// `GET path` with `token` as its bearer token, sent.
    ///
    /// # Panics
    /// When no answer comes.
    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.get(path).bearer_auth(token).send().await.expect("an answer")
    }

    /// `GET path` with one header, sent.
    ///
    /// # Panics
    /// When no answer comes.
    pub async fn get_with_header(&self, path: &str, name: &str, value: &str) -> reqwest::Response {
        self.get(path)
            .header(name, value)
            .send()
            .await
            .expect("an answer")
    }
}

/// Sends `request` and reads its answer as JSON, whatever the status.
///
/// # Panics
/// When no answer comes or its body is not JSON.
pub async fn json_answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    let response = request.send().await.expect("an answer");
    response.json().await.expect("a JSON body")
}

/// Sends `request`, which must be answered `200`, and returns the body as text (metrics, say).
///
/// # Panics
/// When no answer comes or it is not a `200`.
pub async fn text_answer(request: reqwest::RequestBuilder) -> String {
    let response = request.send().await.expect("an answer");
    assert_eq!(response.status(), 200, "status of {}", response.url());
    response.text().await.expect("a text body")
}

/// Sends `request` and reads its answer as JSON; `None` when either fails, for a poll to try
/// again.
pub async fn try_json(request: reqwest::RequestBuilder) -> Option<serde_json::Value> {
    request.send().await.ok()?.json().await.ok()
}

/// Sends `request` with `body` declared as `content_type`: the raw bodies a client may get wrong.
///
/// # Panics
/// When no answer comes.
pub async fn send_body(
    request: reqwest::RequestBuilder,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    request
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("an answer")
}

/// An HTTP client for tests: no proxy, every call bounded by [`PATIENCE`].
///
/// # Panics
/// When the client cannot be built.
#[must_use]
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("build the test client")
}
