//! Starting the system for a test.

use std::path::Path;
use std::process::Stdio;

use mercato::{Config, Running, ServiceName};
use mercato_runtime::CancellationToken;
use mercato_testkit::service::{Backing, try_json};
use mercato_testkit::{TestBackend, TestDatabase};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

pub use mercato_testkit::PATIENCE;
pub use mercato_testkit::problem::expect_problem as problem;

/// The system's configuration for a test: every port 0, data under `data_dir`, each service's
/// database from `db`, and the bus at `bus_url`.
pub fn config(data_dir: &Path, db: &TestDatabase, bus_url: &str) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    for (name, endpoint) in &mut config.services {
        endpoint.listen = "127.0.0.1:0".parse().unwrap();
        if name != "gateway" {
            endpoint.database_url = Some(db.service_url(name));
        }
    }
    config.bus.url = bus_url.to_owned();
    config.identity.key_reload_interval_secs = 1;
    config.identity.key_activation_delay_secs = Some(2);
    config.inventory.demo_catalogue = true;
    // Tests log in from one address far more often than people do; the limiter has its own tests.
    config.gateway.rate_limit.enabled = false;
    // Checkout timing for tests: quick to time out, still ample for a busy machine; the short
    // ack wait is what lets such deadlines outlast a redelivery.
    config.bus.ack_wait_ms = 1_000;
    config.orders.reserve_timeout_ms = 15_000;
    config.orders.payment_timeout_ms = 4_000;
    config.orders.reservation_ttl_ms = 60_000;
    config.orders.timer_poll_ms = 100;
    config.inbox.backoff_ms = vec![50, 200, 500];
    config.projections.poll_ms = 100;
    // tok_late answers after the saga gave up, but inside one provider call.
    config.sandbox.late_delay_ms = 6_000;
    config.payments.provider.timeout_ms = 10_000;
    config.payments.provider.max_attempts = 2;
    config.payments.provider.backoff_ms = 100;
    config.payments.worker_poll_ms = 100;
    config.prepared().expect("test configuration is valid")
}

/// Every service running in this process.
pub struct System {
    pub config: Config,
    pub gateway: String,
    /// Every started service's URL, by name.
    pub urls: std::collections::BTreeMap<String, String>,
    pub http: reqwest::Client,
    running: Option<Running>,
    shutdown: CancellationToken,
}

impl System {
    pub async fn start(config: Config) -> Self {
        let shutdown = CancellationToken::new();
        let running = mercato::start(&config, ServiceName::ALL, shutdown.clone())
            .await
            .expect("system starts");
        Self {
            urls: running
                .started
                .iter()
                .map(|s| (s.name.as_str().to_owned(), s.url.clone()))
                .collect(),
            config: config.clone(),
            gateway: running.url(ServiceName::Gateway).unwrap().to_owned(),
            http: reqwest::Client::new(),
            running: Some(running),
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// `method path` through the gateway with `token`, without a body.
    pub async fn send(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `method path` through the gateway with `token` and the JSON `body`.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `method path` through the gateway without a token, with the JSON `body` if there is one.
    pub async fn send_anonymous(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let request = self.http.request(method, self.url(path));
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        request.send().await.unwrap()
    }

    /// The status `GET path` through the gateway with `token` is answered with.
    pub async fn get_status(&self, path: &str, token: &str) -> u16 {
        self.send(Method::GET, path, token).await.status().as_u16()
    }

    /// `GET path` through the gateway with `token`, read as JSON; `None` while there is no JSON
    /// answer, for a test that polls.
    pub async fn try_get_json(&self, path: &str, token: &str) -> Option<Value> {
        try_json(self.http.get(self.url(path)).bearer_auth(token)).await
    }

    /// `GET path` through the gateway with `token`; it must answer 200 with JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let response = self.send(Method::GET, path, token).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// `PUT path` through the gateway with `token` and the JSON `body`; it must answer 200.
    pub async fn put_ok(&self, path: &str, token: &str, body: &Value) {
        let response = self.send_json(Method::PUT, path, token, body).await;
        let status = response.status();
        assert_eq!(status, 200, "PUT {path}: {}", response.text().await.unwrap());
    }

    /// Sets the units of `sku` on hand, as `admin`.
    pub async fn set_stock(&self, admin: &str, sku: &str, quantity: i64) {
        let path = format!("/api/products/{sku}/stock");
        self.put_ok(&path, admin, &json!({"quantity": quantity})).await;
    }

    /// `GET path` without a token, which must answer `200`; returns the JSON body.
    pub async fn get_public(&self, path: &str) -> Value {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Registers `email`, logs in, and waits until customers has the profile; returns the token.
    pub async fn customer(&self, email: &str) -> String {
        customer_at(&self.http, &self.gateway, email).await
    }

    /// A new admin account (created the way `mercato admin create` does), logged in.
    pub async fn admin(&self) -> String {
        let email = self.admin_account().await;
        access_token(&login(&self.http, &self.gateway, &email).await)
    }

    /// A new admin account (created the way `mercato admin create` does) with the password
    /// "correct horse"; returns its e-mail.
    pub async fn admin_account(&self) -> String {
        let email = unique_email();
        let identity = mercato::service_config::identity(&self.config);
        let db = mercato::ServiceName::Identity
            .open_database(&identity.service.database)
            .await
            .unwrap();
        let accounts = mercato_identity::accounts(db.clone(), &identity).unwrap();
        mercato_identity::admin::create_admin(&accounts, &email, "correct horse")
            .await
            .unwrap();
        db.close().await;
        email
    }

    /// The payment sandbox's charges for an idempotency key.
    pub async fn sandbox_charges(&self, key: &str) -> Vec<Value> {
        let url = format!(
            "{}/v1/charges?idempotency_key={key}",
            self.urls["payment-sandbox"]
        );
        let body: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// Stops every service and waits until they have stopped.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("services stop cleanly");
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a test's system runs on, cleaned up when the test ends: the databases and data
/// directory, and in the distributed setting a private NATS server.
pub struct Fixture {
    /// Held for its lifetime: dropping it stops the broker and drops the test's databases.
    pub backing: Backing,
}

/// Embedded (SQLite and the embedded bus) or distributed (PostgreSQL and NATS JetStream).
pub async fn fresh(backend: TestBackend) -> (Fixture, Config) {
    let backing = Backing::new(backend).await;
    let db = backing.database();
    let config = config(&db.dir().join("data"), db, &backing.bus_config().url);
    (Fixture { backing }, config)
}

/// A system started in this process, and what must outlive it.
pub type Started = (Fixture, System);

/// A fresh system on `backend`, started in this process.
pub async fn started(backend: TestBackend) -> Started {
    let (fixture, config) = fresh(backend).await;
    (fixture, System::start(config).await)
}

pub async fn register(http: &reqwest::Client, base: &str, email: &str) -> reqwest::Response {
    http.post(format!("{base}/api/identity/register"))
        .json(&json!({"email": email, "password": "correct horse", "name": "Ada"}))
        .send()
        .await
        .unwrap()
}

/// Logs in and returns the token response.
pub async fn login(http: &reqwest::Client, base: &str, email: &str) -> Value {
    let response = http
        .post(format!("{base}/api/identity/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", "correct horse"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Registers `email` through the gateway at `base`, logs in, and waits until customers has the
/// profile (it is made from identity's event); returns the access token.
pub async fn customer_at(http: &reqwest::Client, base: &str, email: &str) -> String {
    assert_eq!(register(http, base, email).await.status(), 201);
    let token = access_token(&login(http, base, email).await);
    mercato_testkit::eventually(PATIENCE, "the customer profile to be created", || async {
        let response = http
            .get(format!("{base}/api/customers/me"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    token
}

pub fn access_token(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_owned()
}

/// The `kid` in a JWT's header.
pub fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: Value = serde_json::from_slice(&bytes).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A `mercato` child process.
pub struct Process {
    pub child: Child,
    /// Service name → URL, from the lines `up` and `serve` print.
    pub urls: Vec<(String, String)>,
}

impl Process {
    /// Runs `mercato <args>` with `env`, and waits until it has printed a URL for each of
    /// `expect` services.
    pub async fn spawn(args: &[&str], env: &[(&str, String)], expect: &[&str]) -> Self {
        Self::start(args, env, expect, Stdio::null()).await
    }

    async fn start(args: &[&str], env: &[(&str, String)], expect: &[&str], stderr: Stdio) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mercato"));
        command
            .args(args)
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("mercato starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut urls: Vec<(String, String)> = Vec::new();
        let reported = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.split_whitespace();
                if let (Some(name), Some(url)) = (words.next(), words.next())
                    && (url.starts_with("http://") || url.starts_with("https://"))
                {
                    urls.push((name.to_owned(), url.to_owned()));
                }
                if expect.iter().all(|e| urls.iter().any(|(n, _)| n == e)) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            reported,
            Ok(true),
            "mercato {args:?} did not report {expect:?}; it said {urls:?}"
        );
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, urls }
    }

    pub fn url(&self, name: &str) -> &str {
        &self.urls.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Sends SIGTERM and returns the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(killed.success());
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap()
    }
}

/// The Prometheus text of the service at `base`; `None` while it does not answer.
pub async fn metrics_of(http: &reqwest::Client, base: &str) -> Option<String> {
    let response = http.get(format!("{base}/metrics")).send().await.ok()?;
    response.text().await.ok()
}

/// A configuration file in `dir` that puts every service on a free port, so that `mercato up`
/// processes of tests running side by side never meet on the default ports; its path.
pub fn every_service_on_a_free_port(dir: &Path) -> String {
    let path = dir.join("free-ports.toml");
    let sections: String = ServiceName::ALL
        .iter()
        .map(|s| format!("[services.{}]\nlisten = \"127.0.0.1:0\"\n\n", s.as_str()))
        .collect();
    std::fs::write(&path, sections).expect("write the configuration file");
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// Runs `mercato <args>` to completion; returns (success, stdout, stderr).
pub async fn run(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mercato"));
    command
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("mercato finishes")
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends only the head of a request that declares a body of `length` bytes, and returns the
/// answer's status and body. The server must refuse on the declared length alone; writing the
/// body would race its early answer (and the closed connection) on a real socket.
pub async fn declare_oversized_body(
    base: &str,
    path: &str,
    token: Option<&str>,
    length: usize,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\n{auth}content-length: {length}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

impl Process {
    /// Like [`Process::spawn`], with the child's log (its stderr) appended to the file `log`,
    /// so a test that restarts a service keeps one log across its lives.
    pub async fn spawn_logged(args: &[&str], env: &[(&str, String)], expect: &[&str], log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the process log");
        Self::start(args, env, expect, Stdio::from(log)).await
    }

    /// Kills the process with SIGKILL, as a crash would (no shutdown code runs), and waits
    /// until it is gone.
    pub async fn kill(mut self) -> std::process::ExitStatus {
        tokio::time::timeout(PATIENCE, self.child.kill())
            .await
            .expect("exits after SIGKILL")
            .expect("SIGKILL delivered");
        self.child.wait().await.expect("exit status")
    }
}

/// The value of one series (`name{labels}` exactly as Prometheus text shows it) in `metrics`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A free loopback port, for a process that must be told its port before it binds.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `UserRegistered` whose payload lacks its fields: customers (and notifications) can never
/// apply it, so it is parked.
pub fn poison_registration() -> mercato_messaging::Envelope {
    let mut poison = mercato_messaging::Envelope::new(
        "identity",
        "poison-stream",
        &mercato_contracts::identity::UserRegistered {
            user_id: String::new(),
            email: String::new(),
            name: String::new(),
        },
        &mercato_messaging::Context::default(),
    )
    .unwrap();
    poison.payload = json!({"unexpected": true});
    poison.stream_seq = 1;
    poison
}
