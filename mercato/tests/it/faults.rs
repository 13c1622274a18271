//! Fault tests of the checkout saga, in the distributed setting: every service is its own
//! `mercato serve` process on PostgreSQL and a private NATS JetStream server. One process is
//! killed with SIGKILL inside a saga step and started again on the same port; afterwards every
//! order must end confirmed or cancelled with a reason, no order is charged twice, a cancelled
//! order keeps no charge, each order gets exactly one message about how it ended, and the stock
//! adds up (nothing sold twice, nothing left held). [`Cluster::start_embedded`] runs the same
//! system as one `mercato up` process on SQLite and the embedded bus, for `crash`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{DatabaseConfig, Db};
use mercato_testkit::nats::NatsServer;
use mercato_testkit::service::try_json;
use mercato_testkit::{TestBackend, TestDatabase, eventually};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinSet;
use tokio::time::Instant;

use mercato_security::tls::TlsFiles;

use crate::support::{PATIENCE, Process, customer_at, run, unique_email};

const SKU: &str = "MUG-001";
pub(crate) const VISA: &str = "tok_visa";
const LATE: &str = "tok_late";
const DECLINE: &str = "tok_decline";

/// How long the system may take to finish every saga after a fault: generous, for a busy
/// machine with two cores.
const SETTLE: Duration = Duration::from_secs(60);

/// The process that runs every service in the embedded setting.
pub(crate) const UP: &str = "up";

/// Every service, as `mercato serve` names it.
pub(crate) const SERVICES: [&str; 8] = [
    "identity",
    "customers",
    "inventory",
    "payment-sandbox",
    "payments",
    "notifications",
    "orders",
    "gateway",
];

/// Settings every process gets: quick timeouts that a busy machine still meets.
const SETTINGS: &[(&str, &str)] = &[
    ("MERCATO_INVENTORY__DEMO_CATALOGUE", "true"),
    ("MERCATO_ORDERS__RESERVE_TIMEOUT_MS", "15000"),
    ("MERCATO_ORDERS__PAYMENT_TIMEOUT_MS", "5000"),
    ("MERCATO_ORDERS__RESERVATION_TTL_MS", "60000"),
    ("MERCATO_ORDERS__TIMER_POLL_MS", "100"),
    ("MERCATO_INBOX__BACKOFF_MS", "[50, 200, 500]"),
    ("MERCATO_PROJECTIONS__POLL_MS", "100"),
    ("MERCATO_RELAY__POLL_INTERVAL_MS", "100"),
    ("MERCATO_PAYMENTS__WORKER_POLL_MS", "100"),
    ("MERCATO_PAYMENTS__PROVIDER__BACKOFF_MS", "100"),
    ("MERCATO_PAYMENTS__PROVIDER__MAX_ATTEMPTS", "3"),
    // tok_late answers within one provider call and within the saga's payment timeout.
    ("MERCATO_SANDBOX__LATE_DELAY_MS", "3000"),
    ("MERCATO_PAYMENTS__PROVIDER__TIMEOUT_MS", "6000"),
    // What a killed process had fetched and not acknowledged is delivered again this soon;
    // short enough for the payment deadline above to outlast a redelivery.
    ("MERCATO_BUS__ACK_WAIT_MS", "1500"),
    // The tests poll through the gateway from one address far faster than people do.
    ("MERCATO_GATEWAY__RATE_LIMIT__ENABLED", "false"),
];

/// One system of eight processes at a time: two at once on two cores would make the machine's
/// slowness, not the fault, decide how sagas end.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// An order as placed.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub(crate) id: String,
    card: &'static str,
    pub(crate) quantity: i64,
}

/// The whole system as separate processes (or as one) on loopback ports each process bound
/// itself; a restarted service comes back on the port it had, where the others and the gateway
/// expect it.
pub(crate) struct Cluster {
    /// First: the processes die before their databases are dropped.
    running: BTreeMap<&'static str, Process>,
    /// Where each service listens, learnt from its process once it started.
    ports: BTreeMap<&'static str, u16>,
    env: Vec<(String, String)>,
    data_dir: PathBuf,
    logs: PathBuf,
    pub(crate) http: reqwest::Client,
    /// Inventory's own database, read to check that no units stay held.
    inventory_db: Db,
    /// The bus of the distributed setting; the embedded one is a file in the data directory.
    nats: Option<NatsServer>,
    /// Mutual TLS between the processes, and public TLS at the gateway, when started so.
    tls: Option<ClusterTls>,
    _db: TestDatabase,
    _turn: MutexGuard<'static, ()>,
}

/// The certificates of a system started with TLS on (`mercato certs`, one per service) and the
/// plaintext probe port of each service served over mutual TLS, as its process reported it.
pub(crate) struct ClusterTls {
    pub(crate) certs: PathBuf,
    pub(crate) probes: BTreeMap<&'static str, u16>,
    _redis: mercato_testkit::redis::KeyPrefix,
}

/// The services served over mutual TLS (the gateway's clients get public TLS; the sandbox,
/// standing for an outside provider, stays plaintext).
pub(crate) const MUTUAL_TLS: [&str; 6] = [
    "identity",
    "customers",
    "inventory",
    "payments",
    "notifications",
    "orders",
];

/// The order `mercato serve` processes start in: each binds port 0, and a wave is given the
/// addresses the earlier ones bound. Identity (every service's keys and tokens) and the sandbox
/// (payments' provider) first; orders calls customers and inventory; the gateway calls them all.
const WAVES: [&[&str]; 4] = [
    &["identity", "payment-sandbox"],
    &["customers", "inventory", "payments", "notifications"],
    &["orders"],
    &["gateway"],
];

/// The port in a URL `mercato` printed.
fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

fn order_body(quantity: i64, card: &str) -> Value {
    json!({
        "items": [{"sku": SKU, "quantity": quantity}],
        "payment": {"card_token": card},
        "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    })
}

/// Polls `check` until it returns `Ok`; after [`SETTLE`] fails with `what` and the last state
/// `check` described.
pub(crate) async fn settles<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + SETTLE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) => assert!(
                Instant::now() < deadline,
                "{what} did not happen within {SETTLE:?}; last seen: {state}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl ClusterTls {
    /// A CA and a certificate for every service but the sandbox, as an operator makes them.
    async fn issue(certs: &std::path::Path) -> Self {
        let dir = certs.display().to_string();
        let (ok, _, err) = run(&["certs", "init", "--dir", &dir], &[]).await;
        assert!(ok, "{err}");
        for name in MUTUAL_TLS.iter().chain(&["gateway"]) {
            let (ok, _, err) = run(&["certs", "issue", name, "--dir", &dir], &[]).await;
            assert!(ok, "{err}");
        }
        Self {
            certs: certs.to_owned(),
            probes: BTreeMap::new(),
            _redis: mercato_testkit::redis::KeyPrefix::new(),
        }
    }

    /// `name`'s own `[tls]`: its certificate, and its probe port when it has one (port 0 until
    /// its first start reported one).
    fn env(&self, name: &str) -> Vec<(String, String)> {
        if name == "payment-sandbox" {
            return Vec::new();
        }
        let files = TlsFiles::in_dir(&self.certs, name);
        let mut env = vec![
            ("MERCATO_TLS__ENABLED".to_owned(), "true".to_owned()),
            ("MERCATO_TLS__CA".to_owned(), files.ca.display().to_string()),
            ("MERCATO_TLS__CERT".to_owned(), files.cert.display().to_string()),
            ("MERCATO_TLS__KEY".to_owned(), files.key.display().to_string()),
        ];
        if MUTUAL_TLS.contains(&name) {
            let port = self.probes.get(name).copied().unwrap_or(0);
            env.push((
                "MERCATO_TLS__PROBE_LISTEN".to_owned(),
                format!("127.0.0.1:{port}"),
            ));
        }
        env
    }
}

/// A client that trusts the CA in `certs` and presents no certificate: a customer's.
fn trusting(certs: &std::path::Path) -> reqwest::Client {
    let ca = std::fs::read(certs.join("ca.pem")).expect("the CA certificate");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM certificate"))
        .build()
        .expect("an HTTPS client")
}

impl Cluster {
    /// Starts every service as its own process on PostgreSQL and NATS, with [`SETTINGS`], then
    /// `overrides`.
    pub(crate) async fn start(overrides: &[(&str, &str)]) -> Self {
        Self::start_on(TestBackend::Postgres, overrides, false).await
    }

    /// As [`start`](Self::start), with TLS on everywhere it can be: certificates from `mercato
    /// certs`, every service's port over mutual TLS (with a plaintext probe port beside it),
    /// the gateway's clients over HTTPS, and orders' cache in Redis.
    pub(crate) async fn start_tls(overrides: &[(&str, &str)]) -> Self {
        Self::start_on(TestBackend::Postgres, overrides, true).await
    }

    /// Starts every service in one `mercato up` process ([`UP`]) on SQLite and the embedded bus,
    /// with [`SETTINGS`], then `overrides`.
    pub(crate) async fn start_embedded(overrides: &[(&str, &str)]) -> Self {
        Self::start_on(TestBackend::Sqlite, overrides, false).await
    }

    async fn start_on(backend: TestBackend, overrides: &[(&str, &str)], tls: bool) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        let db = TestDatabase::new(backend).await;
        let nats = match backend {
            TestBackend::Postgres => Some(NatsServer::start(db.dir()).await),
            TestBackend::Sqlite => None,
        };
        let mut env: BTreeMap<String, String> = SETTINGS
            .iter()
            .chain(overrides)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if let Some(nats) = &nats {
            env.insert("MERCATO_BUS__URL".into(), nats.url());
        }
        let mut inventory_url = String::new();
        for name in SERVICES {
            let section = name.to_uppercase();
            if !matches!(name, "gateway" | "payment-sandbox") {
                let url = db.service_url(name);
                if name == "inventory" {
                    inventory_url.clone_from(&url);
                }
                env.insert(format!("MERCATO_SERVICES__{section}__DATABASE_URL"), url);
            }
        }
        let data_dir = db.dir().join("data");
        let logs = db.dir().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let tls = if tls {
            let tls = ClusterTls::issue(&db.dir().join("certs")).await;
            env.insert("MERCATO_CACHE__REDIS_URL".into(), tls._redis.url().to_owned());
            env.insert("MERCATO_CACHE__KEY_PREFIX".into(), tls._redis.as_str().to_owned());
            let gateway = TlsFiles::in_dir(&tls.certs, "gateway");
            // Clients reach the gateway over HTTPS (its certificate names `localhost` too).
            for (key, file) in [("CERT", &gateway.cert), ("KEY", &gateway.key)] {
                env.insert(
                    format!("MERCATO_GATEWAY__EDGE__TLS__{key}"),
                    file.display().to_string(),
                );
            }
            Some(tls)
        } else {
            None
        };
        let http = match &tls {
            Some(tls) => trusting(&tls.certs),
            None => reqwest::Client::new(),
        };
        let mut cluster = Self {
            running: BTreeMap::new(),
            ports: BTreeMap::new(),
            env: env.into_iter().collect(),
            data_dir,
            logs,
            http,
            inventory_db: Db::connect(&DatabaseConfig {
                url: inventory_url,
                ..DatabaseConfig::default()
            })
            .await
            .expect("inventory's database"),
            nats,
            tls,
            _db: db,
            _turn: turn,
        };
        // A wave at a time, each process of a wave at once: none needs another to be ready,
        // only to know where the ones it calls listen.
        let waves: &[&[&'static str]] = if cluster.nats.is_some() { &WAVES } else { &[&[UP]] };
        for wave in waves {
            let mut starting = JoinSet::new();
            for name in *wave {
                starting.spawn(cluster.launch(name));
            }
            while let Some(started) = starting.join_next().await {
                let (name, process) = started.expect("a service starts");
                cluster.learn(name, &process);
                cluster.running.insert(name, process);
            }
        }
        cluster
    }

    /// The processes of this setting: a `mercato serve` per service, or one `mercato up`.
    fn processes(&self) -> &'static [&'static str] {
        if self.nats.is_some() { &SERVICES } else { &[UP] }
    }

    /// The services a process runs: every one in `mercato up`, else the one it serves.
    fn served_by(name: &'static str) -> Vec<&'static str> {
        if name == UP { SERVICES.to_vec() } else { vec![name] }
    }

    /// Records the ports `name`'s process reported: its services', and their probe ports.
    fn learn(&mut self, name: &'static str, process: &Process) {
        for service in Self::served_by(name) {
            self.ports.insert(service, port_of(process.url(service)));
            if let Some(tls) = &mut self.tls
                && MUTUAL_TLS.contains(&service)
            {
                let probe = port_of(process.url(&format!("{service}-probe")));
                tls.probes.insert(service, probe);
            }
        }
    }

    /// The settings of every service's address: the ports learnt so far, port 0 for the ones
    /// `name` serves that have none yet, and payments' provider once the sandbox listens.
    fn addresses(&self, name: &'static str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = SERVICES
            .iter()
            .filter_map(|service| {
                let port = match self.ports.get(service) {
                    Some(port) => *port,
                    None if Self::served_by(name).contains(service) => 0,
                    None => return None,
                };
                let section = service.to_uppercase();
                Some((
                    format!("MERCATO_SERVICES__{section}__LISTEN"),
                    format!("127.0.0.1:{port}"),
                ))
            })
            .collect();
        if let Some(port) = self.ports.get("payment-sandbox") {
            env.push((
                "MERCATO_PAYMENTS__PROVIDER__URL".to_owned(),
                format!("http://127.0.0.1:{port}"),
            ));
        }
        env
    }

    fn launch(&self, name: &'static str) -> impl Future<Output = (&'static str, Process)> + Send + 'static {
        let data_dir = self.data_dir.display().to_string();
        let mut env = self.env.clone();
        env.extend(self.addresses(name));
        let mut expect: Vec<String> = Self::served_by(name).iter().map(|s| (*s).to_owned()).collect();
        if let Some(tls) = &self.tls {
            env.extend(tls.env(name));
            if MUTUAL_TLS.contains(&name) {
                expect.push(format!("{name}-probe"));
            }
        }
        let log = self.logs.join(format!("{name}.log"));
        async move {
            let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
            let process = if name == UP {
                let args = [UP, "--data-dir", &data_dir];
                Process::spawn_logged(&args, &env, &expect, &log).await
            } else {
                let args = ["serve", name, "--data-dir", &data_dir];
                Process::spawn_logged(&args, &env, &expect, &log).await
            };
            (name, process)
        }
    }

    /// SIGKILL: the service gets no chance to finish anything.
    pub(crate) async fn kill(&mut self, name: &str) {
        let process = self.running.remove(name).expect("the service runs");
        let status = process.kill().await;
        assert!(!status.success(), "{name} was killed, yet exited with {status}");
    }

    /// Starts `name` again with the same settings, on the same port.
    pub(crate) async fn restart(&mut self, name: &'static str) {
        let (_, process) = self.launch(name).await;
        let shown = if name == UP { "gateway" } else { name };
        assert_eq!(
            process.url(shown),
            format!("http://127.0.0.1:{}", self.ports[shown])
        );
        self.running.insert(name, process);
    }

    pub(crate) async fn stop(mut self) {
        for (_, process) in std::mem::take(&mut self.running) {
            process.kill().await;
        }
        self.inventory_db.close().await;
    }

    /// SIGTERM, as an orchestrator stops a service: it must exit cleanly.
    pub(crate) async fn terminate(&mut self, name: &str) {
        let process = self.running.remove(name).expect("the service runs");
        let status = process.terminate().await;
        assert!(status.success(), "{name} exited with {status} after SIGTERM");
    }

    /// `service`'s URL: `https://localhost:…` for a service served over TLS (its certificate
    /// names `localhost`), else `http://127.0.0.1:…`.
    pub(crate) fn url(&self, service: &str, path: &str) -> String {
        let port = self.ports[service];
        if self.tls.is_some() && service != "payment-sandbox" {
            format!("https://localhost:{port}{path}")
        } else {
            format!("http://127.0.0.1:{port}{path}")
        }
    }

    /// The TLS of a system started with [`start_tls`](Self::start_tls).
    pub(crate) fn tls(&self) -> &ClusterTls {
        self.tls.as_ref().expect("the system was started with TLS")
    }

    /// Waits until every service answers `/ready`.
    pub(crate) async fn all_ready(&self) {
        for name in SERVICES {
            eventually(PATIENCE, &format!("{name} to be ready"), || async {
                let response = self.http.get(self.url(name, "/ready")).send().await.ok()?;
                (response.status() == 200).then_some(())
            })
            .await;
        }
    }

    /// A new admin account, made by `mercato admin create` against identity's database, with
    /// the password "correct horse"; returns its e-mail.
    pub(crate) async fn admin_account(&self) -> String {
        let email = unique_email();
        let data_dir = self.data_dir.display().to_string();
        let mut env: Vec<(&str, String)> = self.env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        env.push(("MERCATO_ADMIN_PASSWORD", "correct horse".to_owned()));
        let (ok, out, err) = run(
            &["admin", "create", "--email", &email, "--data-dir", &data_dir],
            &env,
        )
        .await;
        assert!(ok && out.contains("created admin"), "{out}{err}");
        email
    }

    /// A registered customer with a profile; returns their access token.
    pub(crate) async fn customer(&self) -> String {
        customer_at(&self.http, &self.url("gateway", ""), &unique_email()).await
    }

    /// Places one order per card at once, of one or two units each.
    pub(crate) async fn place(&self, token: &str, cards: &[&'static str]) -> Vec<Placed> {
        let mut placing = JoinSet::new();
        for (i, card) in cards.iter().copied().enumerate() {
            let quantity = if i % 2 == 0 { 1 } else { 2 };
            let (http, url, token) = (
                self.http.clone(),
                self.url("gateway", "/api/orders"),
                token.to_owned(),
            );
            placing.spawn(async move {
                let response = http
                    .post(url)
                    .bearer_auth(&token)
                    .json(&order_body(quantity, card))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap();
                assert_eq!(status, 201, "{body}");
                Placed {
                    id: body["id"].as_str().unwrap().to_owned(),
                    card,
                    quantity,
                }
            });
        }
        let mut placed = Vec::new();
        while let Some(order) = placing.join_next().await {
            placed.push(order.expect("an order is placed"));
        }
        placed
    }

    /// The order as its customer sees it; `None` while it cannot be read.
    pub(crate) async fn order(&self, token: &str, id: &str) -> Option<Value> {
        let response = self
            .http
            .get(self.url("gateway", &format!("/api/orders/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        response.json().await.ok()
    }

    /// Waits until the order is confirmed; returns it as its customer sees it.
    pub(crate) async fn confirmed(&self, token: &str, id: &str) -> Value {
        eventually(PATIENCE, "the order to be confirmed", || async {
            let view = self.order(token, id).await?;
            (view["status"] == "confirmed").then_some(view)
        })
        .await
    }

    /// The charges the sandbox made with the order's idempotency key.
    pub(crate) async fn charges(&self, order_id: &str) -> Vec<Value> {
        let url = self.url(
            "payment-sandbox",
            &format!("/v1/charges?idempotency_key=charge-{order_id}"),
        );
        let body: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        body["data"].as_array().cloned().unwrap_or_default()
    }

    pub(crate) async fn available(&self) -> Option<i64> {
        let response = self
            .http
            .get(self.url("gateway", &format!("/api/products/{SKU}")))
            .send()
            .await
            .ok()?;
        let product: Value = response.json().await.ok()?;
        product["available"].as_i64()
    }

    /// Units inventory holds for unpaid orders.
    async fn held(&self) -> Option<i64> {
        let row = sqlx::query("SELECT reserved FROM products WHERE sku = $1")
            .bind(SKU)
            .fetch_one(self.inventory_db.pool())
            .await
            .ok()?;
        row.try_get("reserved").ok()
    }

    /// The customer's mailbox, newest first.
    async fn mailbox(&self, token: &str) -> Option<Vec<Value>> {
        let page = try_json(
            self.http
                .get(self.url("gateway", "/api/notifications?page_size=100"))
                .bearer_auth(token),
        )
        .await?;
        page["items"].as_array().cloned()
    }

    /// Waits until the sandbox holds a charge of a `tok_late` order that has not answered yet:
    /// payments is in the middle of that provider call.
    async fn a_late_charge_in_flight(&self, placed: &[Placed]) -> String {
        eventually(PATIENCE, "a tok_late charge in flight at the sandbox", || async {
            for order in placed.iter().filter(|o| o.card == LATE) {
                let charges = self.charges(&order.id).await;
                if charges.iter().any(|c| c["status"] == "pending") {
                    return Some(order.id.clone());
                }
            }
            None
        })
        .await
    }

    /// Waits until one of the orders is confirmed; returns its id.
    async fn a_confirmed_order(&self, token: &str, placed: &[Placed]) -> String {
        eventually(PATIENCE, "an order to be confirmed", || async {
            for order in placed {
                if let Some(view) = self.order(token, &order.id).await
                    && view["status"] == "confirmed"
                {
                    return Some(order.id.clone());
                }
            }
            None
        })
        .await
    }

    /// Every order ended; the orders as their customer sees them, in `placed`'s order.
    pub(crate) async fn ended(&self, token: &str, placed: &[Placed]) -> Vec<Value> {
        let deadline = Instant::now() + SETTLE;
        // An order that ended stays ended, so each needs to be seen ended only once.
        let mut seen: Vec<Option<Value>> = vec![None; placed.len()];
        loop {
            for (order, view) in placed.iter().zip(&mut seen) {
                if view.as_ref().is_none_or(|v| v["status"] == "pending")
                    && let Some(now) = self.order(token, &order.id).await
                {
                    *view = Some(now);
                }
            }
            if seen.iter().flatten().filter(|v| v["status"] != "pending").count() == placed.len() {
                return seen.into_iter().flatten().collect();
            }
            let pending: Vec<String> = placed
                .iter()
                .zip(&seen)
                .filter(|(_, v)| v.as_ref().is_none_or(|v| v["status"] == "pending"))
                .map(|(o, v)| {
                    let payment = v.as_ref().map_or(&Value::Null, |v| &v["payment"]["status"]);
                    format!("{} ({}, payment {payment})", o.id, o.card)
                })
                .collect();
            assert!(
                Instant::now() < deadline,
                "orders still pending after {SETTLE:?}: {}",
                pending.join(", ")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The invariants every fault run must leave intact; `stock` is what was available before
    /// the orders were placed.
    pub(crate) async fn assert_invariants(&self, token: &str, placed: &[Placed], stock: i64) {
        let ended = self.ended(token, placed).await;
        let mut sold = 0;
        let mut outcomes = BTreeMap::<String, usize>::new();
        for (order, view) in placed.iter().zip(&ended) {
            let status = view["status"].as_str().unwrap_or_default();
            let reason = view["cancel_reason"].as_str().unwrap_or_default();
            match status {
                "confirmed" => sold += order.quantity,
                "cancelled" => assert!(!reason.is_empty(), "a cancelled order says why: {view}"),
                _ => panic!(
                    "order {} ({}) ended neither confirmed nor cancelled: {view}",
                    order.id, order.card
                ),
            }
            *outcomes
                .entry(format!("{} {status} {reason}", order.card).trim_end().to_owned())
                .or_default() += 1;
        }
        // Which paths the fault drove the sagas down (shown with --nocapture or on failure).
        eprintln!("orders ended: {outcomes:?}");

        for (order, view) in placed.iter().zip(&ended) {
            let charges = self.charges(&order.id).await;
            assert!(
                charges.len() <= 1,
                "order {} ({}) was charged {} times: {charges:?}",
                order.id,
                order.card,
                charges.len()
            );
            if view["status"] == "confirmed" {
                assert_eq!(charges.len(), 1, "confirmed without a charge: {view}");
                let charge = &charges[0];
                assert_eq!(charge["status"], "succeeded", "{charge}");
                assert_eq!(
                    charge["refunded"], false,
                    "a confirmed order was refunded: {charge}"
                );
                assert_eq!(
                    charge["amount_minor"], view["total"]["amount_minor"],
                    "{charge} for {view}"
                );
            } else {
                settles(
                    &format!(
                        "the charge of cancelled order {} ({}) to be refunded",
                        order.id, order.card
                    ),
                    || async {
                        let charges = self.charges(&order.id).await;
                        if charges.iter().all(|c| c["refunded"] == true) {
                            Ok(())
                        } else {
                            Err(format!("{charges:?}; the order: {view}"))
                        }
                    },
                )
                .await;
                assert!(self.charges(&order.id).await.len() <= 1);
            }
        }

        let expected = stock - sold;
        settles(
            &format!("{SKU} to have {expected} available and nothing held"),
            || async {
                match (self.available().await, self.held().await) {
                    (Some(available), Some(0)) if available == expected => Ok(()),
                    (available, held) => Err(format!("available {available:?}, held {held:?}")),
                }
            },
        )
        .await;

        let mailbox = settles("a message about how each order ended", || async {
            let mailbox = self
                .mailbox(token)
                .await
                .ok_or_else(|| "the mailbox cannot be read".to_owned())?;
            let missing: Vec<&str> = placed
                .iter()
                .filter(|o| !mailbox.iter().any(|m| mentions(m, &o.id)))
                .map(|o| o.id.as_str())
                .collect();
            if missing.is_empty() {
                Ok(mailbox)
            } else {
                Err(format!("nothing yet about {missing:?}"))
            }
        })
        .await;
        for (order, view) in placed.iter().zip(&ended) {
            let kinds: Vec<&Value> = mailbox
                .iter()
                .filter(|m| mentions(m, &order.id))
                .map(|m| &m["kind"])
                .collect();
            let expected = format!("order_{}", view["status"].as_str().unwrap_or_default());
            assert_eq!(
                kinds,
                [&json!(expected)],
                "messages about order {}: {view}",
                order.id
            );
        }
    }
}

fn mentions(message: &Value, order_id: &str) -> bool {
    message["body"].as_str().is_some_and(|b| b.contains(order_id))
}

impl Drop for Cluster {
    /// A failed run shows what the services complained about before their logs go.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for name in self.processes() {
            let log = std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default();
            let complaints: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
                .collect();
            let tail = &complaints[complaints.len().saturating_sub(15)..];
            eprintln!(
                "--- {name}: {} warnings and errors, the last {}:\n{}",
                complaints.len(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// When a test kills a service, relative to the orders it placed.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// At once: the orders are placed, their sagas just begun.
    Placed,
    /// While payments is in the middle of a `tok_late` provider call.
    LateChargeInFlight,
    /// Right after an order is confirmed.
    OrderConfirmed,
}

/// Starts a cluster with `overrides`, places one order per card, kills `service` at `moment`
/// and starts it again; then every order must end with the invariants kept.
async fn killed_and_restarted(
    service: &'static str,
    moment: Moment,
    overrides: &[(&str, &str)],
    cards: &[&'static str],
) {
    let mut cluster = Cluster::start(overrides).await;
    let shopper = cluster.customer().await;
    let stock = cluster.available().await.unwrap();
    let placed = cluster.place(&shopper, cards).await;
    match moment {
        Moment::Placed => {}
        Moment::LateChargeInFlight => {
            cluster.a_late_charge_in_flight(&placed).await;
        }
        Moment::OrderConfirmed => {
            cluster.a_confirmed_order(&shopper, &placed).await;
        }
    }
    cluster.kill(service).await;
    cluster.restart(service).await;
    cluster.assert_invariants(&shopper, &placed, stock).await;
    cluster.stop().await;
}

/// Selected by the distributed-suite filter (`::postgres::`).
mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orders_killed_while_reserving_comes_back_and_every_order_ends() {
        // Each order is in the event store; its ReserveStock at most on its way.
        let cards = [VISA, VISA, DECLINE, VISA, VISA, DECLINE, VISA, VISA];
        killed_and_restarted("orders", Moment::Placed, &[], &cards).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orders_killed_while_charges_are_pending_comes_back_and_every_order_ends() {
        // tok_late captures 3 s after the call, inside the 5 s the saga waits: payments
        // publishes the capture while orders is down or just back.
        let cards = [LATE, VISA, LATE, VISA, LATE, VISA, LATE, VISA];
        killed_and_restarted("orders", Moment::LateChargeInFlight, &[], &cards).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orders_killed_right_after_a_confirmation_comes_back_commits_and_notifies_once() {
        // The commit and the confirmation's event may still sit in the outbox.
        let cards = [VISA, VISA, LATE, VISA, DECLINE, VISA, VISA, VISA];
        killed_and_restarted("orders", Moment::OrderConfirmed, &[], &cards).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn payments_killed_with_charges_in_flight_charges_every_order_at_most_once() {
        // The killed worker's lease (provider timeout + 1 s) must run out before the charge is
        // asked again, with the same key; the saga waits long enough for that to confirm.
        let overrides = [
            ("MERCATO_SANDBOX__LATE_DELAY_MS", "2500"),
            ("MERCATO_PAYMENTS__PROVIDER__TIMEOUT_MS", "4000"),
            ("MERCATO_ORDERS__PAYMENT_TIMEOUT_MS", "8000"),
        ];
        let cards = [LATE, VISA, LATE, VISA, LATE, VISA, LATE, VISA];
        killed_and_restarted("payments", Moment::LateChargeInFlight, &overrides, &cards).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inventory_killed_while_reserving_comes_back_and_every_saga_finishes() {
        let cards = [VISA, DECLINE, VISA, VISA, LATE, VISA, DECLINE, VISA];
        killed_and_restarted("inventory", Moment::Placed, &[], &cards).await;
    }
}
