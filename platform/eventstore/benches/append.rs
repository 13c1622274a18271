//! Event store append throughput, against a plain `INSERT` with the same transaction pattern.
//!
//! Each append is one event in its own transaction (with its outbox row), spread over 100
//! streams, from one task and then from eight; the two workloads run one after the other for
//! each number of tasks, after a warm-up that opens every connection of the pool and prepares
//! both statements, so neither pays for connecting or for cold caches inside its measurement.
//! SQLite runs on a temporary file with the production settings (WAL, `synchronous = FULL`);
//! PostgreSQL on a fresh database created on `MERCATO_BENCH_POSTGRES_URL`'s server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped afterwards, skipped when
//! unreachable. Each case stops early after a few seconds so the whole run stays near a minute
//! on slow disks.
//!
//! `cargo bench -p mercato-eventstore`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mercato_eventstore::{ExpectedVersion, append};
use mercato_messaging::{Context, Envelope, Event, outbox};
use mercato_storage::db::redact_url;
use mercato_storage::{DatabaseConfig, Db, Migration, migrate, now_millis, sqlx};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

const APPENDS: usize = 8_000;
/// Appends per task of the unmeasured warm-up, for each workload.
const WARM_UP: usize = 20;
const WARM: &str = "warm-up";
const STREAMS: usize = 100;
const TASKS: usize = 8;
const CASE_BUDGET: Duration = Duration::from_secs(6);

const PLAIN_TABLE: Migration = Migration::new(
    1,
    "bench_plain",
    "CREATE TABLE plain_events (
              event_id TEXT PRIMARY KEY,
              stream_id TEXT NOT NULL,
              seq BIGINT NOT NULL,
              body TEXT NOT NULL,
              created_at BIGINT NOT NULL
          )",
);

#[derive(Serialize, Deserialize)]
struct ItemAdded {
    sku: String,
    quantity: i64,
    unit_price_cents: i64,
}

impl Event for ItemAdded {
    const TYPE: &'static str = "ItemAdded";
    const VERSION: u32 = 1;
}

fn envelope(stream_id: &str, n: usize) -> Envelope {
    let event = ItemAdded {
        sku: format!("SKU-{n:06}"),
        quantity: 1 + i64::try_from(n % 5).unwrap_or(0),
        unit_price_cents: 1_999,
    };
    let context = Context {
        correlation_id: Some(format!("bench-{n}")),
        ..Context::default()
    };
    Envelope::new("orders", stream_id, &event, &context).expect("envelope")
}

#[derive(Clone, Copy)]
enum Workload {
    EventStore,
    PlainInsert,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Self::EventStore => "event store append",
            Self::PlainInsert => "plain INSERT",
        }
    }
}

struct Measurement {
    backend: &'static str,
    workload: Workload,
    tasks: usize,
    appends: usize,
    elapsed: Duration,
}

/// One task's share: appends `count` events round-robin over its streams, each in its own
/// transaction, until done or past the deadline. Returns how many it committed.
async fn writer(
    db: Db,
    workload: Workload,
    case: String,
    streams: Vec<usize>,
    count: usize,
    deadline: Instant,
) -> usize {
    let mut versions: HashMap<usize, i64> = HashMap::new();
    for n in 0..count {
        if Instant::now() > deadline {
            return n;
        }
        let stream = streams[n % streams.len()];
        let stream_id = format!("{case}-{stream}");
        let event = envelope(&stream_id, n);
        let mut tx = db.begin().await.expect("begin");
        match workload {
            Workload::EventStore => {
                let version = versions.entry(stream).or_insert(0);
                let appended = append(&mut tx, &stream_id, ExpectedVersion::Exact(*version), vec![event])
                    .await
                    .expect("append");
                *version = appended.version;
            }
            Workload::PlainInsert => {
                let version = versions.entry(stream).or_insert(0);
                *version += 1;
                sqlx::query(
                    "INSERT INTO plain_events (event_id, stream_id, seq, body, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&event.id)
                .bind(&stream_id)
                .bind(*version)
                .bind(serde_json::to_string(&event).expect("json"))
                .bind(now_millis())
                .execute(&mut *tx)
                .await
                .expect("insert");
            }
        }
        tx.commit().await.expect("commit");
    }
    count
}

async fn measure(
    db: &Db,
    backend: &'static str,
    workload: Workload,
    tasks: usize,
    appends: usize,
) -> Measurement {
    let warm = if backend == WARM { "warm-" } else { "" };
    let case = format!("{warm}{}-{tasks}", workload.label().replace(' ', "-"));
    let started = Instant::now();
    let deadline = started + CASE_BUDGET;
    let mut writers = JoinSet::new();
    for task in 0..tasks {
        // Each task owns its streams, so versions never clash and every append commits.
        let streams: Vec<usize> = (0..STREAMS).filter(|s| s % tasks == task).collect();
        writers.spawn(writer(
            db.clone(),
            workload,
            case.clone(),
            streams,
            appends / tasks,
            deadline,
        ));
    }
    let mut appends = 0;
    while let Some(done) = writers.join_next().await {
        appends += done.expect("writer panicked");
    }
    Measurement {
        backend,
        workload,
        tasks,
        appends,
        elapsed: started.elapsed(),
    }
}

async fn bench_backend(db: &Db, backend: &'static str) -> Vec<Measurement> {
    migrate(
        db,
        "bench",
        &[
            outbox::MIGRATION,
            mercato_eventstore::MIGRATION,
            mercato_eventstore::COMMIT_ORDER,
            PLAIN_TABLE,
        ],
    )
    .await
    .expect("migrate");
    warm_up(db).await;
    let mut results = Vec::new();
    for tasks in [1, TASKS] {
        for workload in [Workload::EventStore, Workload::PlainInsert] {
            results.push(measure(db, backend, workload, tasks, APPENDS).await);
        }
    }
    results
}

/// Opens all of the pool's connections at once, then runs a few appends of each workload from
/// every task, so the first measured case does not pay for connecting and preparing that the
/// ones after it find done.
async fn warm_up(db: &Db) {
    let mut held = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        held.push(db.pool().acquire().await.expect("connection"));
    }
    drop(held);
    for workload in [Workload::EventStore, Workload::PlainInsert] {
        measure(db, WARM, workload, TASKS, WARM_UP * TASKS).await;
    }
}

async fn sqlite() -> Vec<Measurement> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let db = Db::connect(&config(&url)).await.expect("open SQLite");
    let results = bench_backend(&db, "sqlite").await;
    db.close().await;
    results
}

async fn postgres() -> Option<Vec<Measurement>> {
    let admin_url = std::env::var("MERCATO_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("mercato_bench_{}", uuid::Uuid::new_v4().simple());
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    let url = match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    };
    let db = match Db::connect(&config(&url)).await {
        Ok(db) => db,
        Err(e) => {
            println!(
                "PostgreSQL at {} is unreachable ({e}); skipping it",
                redact_url(&admin_url)
            );
            return None;
        }
    };
    let results = bench_backend(&db, "postgres").await;
    db.close().await;
    match Db::connect(&config(&admin_url)).await {
        Ok(admin) => {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = sqlx::query(&drop).execute(admin.pool()).await {
                println!("could not drop {name}: {e}");
            }
            admin.close().await;
        }
        Err(e) => println!("could not drop {name}: {e}"),
    }
    Some(results)
}

fn config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: url.to_owned(),
        max_connections: u32::try_from(TASKS).unwrap_or(8),
        acquire_timeout_ms: 3_000,
        ..DatabaseConfig::default()
    }
}

fn print_table(results: &[Measurement]) {
    println!();
    println!(
        "{:<9} {:<20} {:>5} {:>8} {:>9} {:>12} {:>9}",
        "backend", "workload", "tasks", "appends", "seconds", "appends/s", "vs plain"
    );
    for m in results {
        let rate = m.appends as f64 / m.elapsed.as_secs_f64();
        let plain = results
            .iter()
            .find(|p| {
                p.backend == m.backend && p.tasks == m.tasks && matches!(p.workload, Workload::PlainInsert)
            })
            .map(|p| p.appends as f64 / p.elapsed.as_secs_f64());
        let ratio = plain.map_or_else(String::new, |p| format!("{:.2}x", rate / p));
        println!(
            "{:<9} {:<20} {:>5} {:>8} {:>9.2} {:>12.0} {:>9}",
            m.backend,
            m.workload.label(),
            m.tasks,
            m.appends,
            m.elapsed.as_secs_f64(),
            rate,
            ratio
        );
    }
    println!();
    println!(
        "one event per transaction over {STREAMS} streams; event store rows include the outbox row; \
         a case stops after {}s",
        CASE_BUDGET.as_secs()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut results = sqlite().await;
        if let Some(postgres) = postgres().await {
            results.extend(postgres);
        }
        print_table(&results);
    });
}
