//! Outbox publish-to-handled latency, end to end: a service transaction appends an event to its
//! outbox and commits; the relay publishes it; the inbox of a consumer group applies it in its
//! own transaction. Measured at a steady rate (not flat out), so the numbers are latency, not
//! queueing. For scale, the same database's floor: one plain `INSERT` + commit.
//!
//! Embedded: SQLite files and the embedded bus. Distributed: PostgreSQL (a fresh database on
//! `MERCATO_TEST_POSTGRES_URL`'s server, default local) and a private `nats-server`; skipped with
//! a note when either is missing.
//!
//! `cargo bench -p mercato-messaging --bench outbox_latency`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mercato_messaging::inbox::MIGRATION as INBOX;
use mercato_messaging::outbox::{self, MIGRATION as OUTBOX};
use mercato_messaging::relay::MIGRATION as RELAY;
use mercato_messaging::{
    Bus, BusConfig, ConsumerMetrics, ConsumerSpec, Context, Envelope, Event, Handler, HandlerFuture, Inbox,
    InboxConfig, Outbox, Relay, RelayConfig, RelayMetrics,
};
use mercato_storage::{DatabaseConfig, Db, Migration, Tx, migrate, sqlx};
use mercato_testkit::nats::NatsServer;
use mercato_testkit::{TestBackend, TestDatabase};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 1_000;
const RATE_PER_SEC: u64 = 200;

const PLAIN: Migration = Migration::new(
    1,
    "bench_plain",
    "CREATE TABLE plain_rows (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
);

#[derive(Serialize, Deserialize)]
struct Pinged {
    sent_at_us: u64,
}

impl Event for Pinged {
    const TYPE: &'static str = "Pinged";
    const VERSION: u32 = 1;
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Records how long after its append each event reached the handler, and how many inbox
/// transactions carried them.
struct Recorder {
    latencies_us: Arc<Mutex<Vec<u64>>>,
    commits: Arc<AtomicUsize>,
}

impl Handler for Recorder {
    fn handle<'a>(&'a self, envelope: &'a Envelope, _tx: &'a mut Tx) -> HandlerFuture<'a> {
        Box::pin(async move {
            let ping: Pinged = envelope.decode()?;
            let latency = now_us().saturating_sub(ping.sent_at_us);
            self.latencies_us
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(latency);
            Ok(())
        })
    }

    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

fn summary(label: &str, mut samples: Vec<u64>) {
    samples.sort_unstable();
    println!(
        "  {label:<34} n={:<5} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        percentile(&samples, 100.0)
    );
}

async fn plain_insert_latency(db: &Db) -> Vec<u64> {
    let mut samples = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        let start = Instant::now();
        let mut tx = db.begin().await.expect("begin");
        sqlx::query("INSERT INTO plain_rows (id, body) VALUES ($1, $2)")
            .bind(format!("row-{n}"))
            .bind("{\"sent_at_us\":0}")
            .execute(&mut *tx)
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
        samples.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    samples
}

async fn run_case(label: &str, database_url: &str, bus_url: &str) {
    println!("{label}");
    let db = Db::connect(&DatabaseConfig {
        url: database_url.to_owned(),
        max_connections: 8,
        ..DatabaseConfig::default()
    })
    .await
    .expect("database");
    migrate(&db, "bench", &[PLAIN, OUTBOX, RELAY, INBOX])
        .await
        .expect("migrations");
    let bus = Bus::connect(&BusConfig {
        url: bus_url.to_owned(),
        ..BusConfig::default()
    })
    .await
    .expect("bus");

    summary("plain INSERT + commit", plain_insert_latency(&db).await);

    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let outbox_handle = Outbox::new();
    let relay = Relay::new(
        db.clone(),
        bus.clone(),
        outbox_handle.clone(),
        RelayConfig::default(),
        RelayMetrics::register(&mut registry),
    );
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(EVENTS)));
    let commits = Arc::new(AtomicUsize::new(0));
    let inbox = Inbox::new(
        db.clone(),
        bus.clone(),
        ConsumerSpec {
            group: "bench".into(),
            category: "bench".into(),
            event_types: Vec::new(),
        },
        Recorder {
            latencies_us: Arc::clone(&latencies),
            commits: Arc::clone(&commits),
        },
        InboxConfig {
            fetch_wait_ms: 100,
            ..InboxConfig::default()
        },
        ConsumerMetrics::register(&mut registry),
    );
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    let inbox_task = tokio::spawn(inbox.run(shutdown.clone()));

    let mut append_us = Vec::with_capacity(EVENTS);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    for n in 0..EVENTS {
        tick.tick().await;
        let start = Instant::now();
        let stream = format!("stream-{}", n % 50);
        let mut envelope = Envelope::new(
            "bench",
            &stream,
            &Pinged { sent_at_us: now_us() },
            &Context::default(),
        )
        .expect("envelope");
        let mut tx = db.begin().await.expect("begin");
        outbox::append(&mut tx, &mut envelope).await.expect("append");
        tx.commit().await.expect("commit");
        outbox_handle.committed();
        append_us.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len()
        < EVENTS
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let _ = relay_task.await;
    let _ = inbox_task.await;
    summary("outbox append + commit", append_us);
    let handled = std::mem::take(
        &mut *latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    println!(
        "  inbox transactions: {} for {} events",
        commits.load(Ordering::Relaxed),
        handled.len()
    );
    summary("outbox append → handler (end to end)", handled);
    db.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("outbox publish-to-handled latency: {EVENTS} events at {RATE_PER_SEC}/s, 50 streams");
    let embedded = TestDatabase::new(TestBackend::Sqlite).await;
    let bus_url = format!("sqlite://{}?mode=rwc", embedded.dir().join("bus.db").display());
    run_case(
        "embedded: SQLite (WAL, synchronous=FULL) + embedded bus",
        embedded.url(),
        &bus_url,
    )
    .await;

    let pg_up = tokio::net::TcpStream::connect("127.0.0.1:5432").await.is_ok();
    let nats_installed = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok();
    if pg_up && nats_installed {
        let postgres = TestDatabase::new(TestBackend::Postgres).await;
        let nats = NatsServer::start(postgres.dir()).await;
        run_case(
            "distributed: PostgreSQL + NATS JetStream",
            postgres.url(),
            &nats.url(),
        )
        .await;
    } else {
        println!("distributed: skipped (needs PostgreSQL on 127.0.0.1:5432 and nats-server on PATH)");
    }
}
