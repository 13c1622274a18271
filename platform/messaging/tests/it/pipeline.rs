//! Outbox → relay → bus → inbox, on the embedded setting (SQLite + embedded bus) and the
//! distributed one (PostgreSQL + a private NATS server): order per stream, a relay crash
//! between publishing and marking, a consumer crash mid-handler, work split within a group, and
//! a poison message.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use mercato_messaging::inbox::{MIGRATION as INBOX, Outcome, RETENTION_MIGRATION as INBOX_RETENTION};
use mercato_messaging::outbox::{self, MIGRATION as OUTBOX};
use mercato_messaging::relay::{MIGRATION as RELAY, RETENTION_MIGRATION as OUTBOX_RETENTION};
use mercato_messaging::{
    Bus, BusConfig, ConsumerMetrics, ConsumerSpec, Context, Envelope, Handler, HandlerError, HandlerFuture,
    Inbox, InboxConfig, Outbox, Relay, RelayConfig, RelayMetrics,
};
use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{DatabaseConfig, Db, Migration, Tx, migrate};
use mercato_testkit::service::Backing;
use mercato_testkit::{TestBackend, backend_tests, eventually};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::support::{Noted, PATIENCE};

backend_tests!(
    an_event_naming_a_source_that_may_not_produce_it_is_refused_for_good,
    a_redelivered_event_is_refused_by_its_record_before_the_handler_runs,
    a_streams_events_reach_the_handler_in_order_even_when_one_is_redelivered,
    a_relay_that_crashed_between_publishing_and_marking_causes_no_second_effect,
    a_consumer_that_crashes_mid_handler_gets_the_event_again_and_applies_it_once,
    two_members_of_a_group_split_the_work_and_no_event_is_handled_by_both,
    a_poison_message_is_parked_with_its_error_and_the_consumer_keeps_going,
    a_failing_message_in_a_batch_is_retried_alone_while_the_others_commit_once,
    a_poison_message_in_a_batch_is_parked_alone_and_its_successor_commits_with_the_others,
    the_relay_marks_only_the_rows_the_bus_acknowledged_and_they_arrive_in_order,
    a_group_of_some_types_applies_them_in_stream_order_through_retries,
    a_consumer_told_to_stop_mid_batch_hands_the_rest_to_another_member_at_once,
    several_workers_keep_each_streams_order_through_retries_and_apply_every_event_once,
    each_stream_in_the_outbox_is_numbered_from_one_and_each_row_holds_its_number,
    two_members_applying_one_event_at_once_keep_one_effect,
);

/// The effects table; the backends spell only its auto-numbered key differently.
macro_rules! effects_table {
    ($key:literal) => {
        concat!(
            "CREATE TABLE effects (
              position ",
            $key,
            ",
              member TEXT NOT NULL,
              event_id TEXT NOT NULL,
              stream_id TEXT NOT NULL,
              n BIGINT NOT NULL,
              batch BIGINT NOT NULL
          )"
        )
    };
}

const EFFECTS: Migration = Migration {
    version: 1,
    name: "effects",
    sql: effects_table!("INTEGER PRIMARY KEY AUTOINCREMENT"),
    postgres_sql: Some(effects_table!("BIGSERIAL PRIMARY KEY")),
};

/// One service's database, its outbox and relay, and the bus.
pub(crate) struct Pipeline {
    pub(crate) db: Db,
    bus_config: BusConfig,
    pub(crate) bus: Bus,
    outbox: Outbox,
    shutdown: CancellationToken,
    // Declared last: the relays and inboxes stop before their broker and database go.
    _backing: Backing,
}

impl Pipeline {
    /// A short ack wait, so a delivery lost with its consumer comes back quickly.
    pub(crate) async fn start(backend: TestBackend) -> Self {
        Self::start_with_ack_wait(backend, 500).await
    }

    async fn start_with_ack_wait(backend: TestBackend, ack_wait_ms: u64) -> Self {
        let mut backing = Backing::new(backend).await;
        backing.tune_bus(|bus| bus.ack_wait_ms = ack_wait_ms);
        let db = Db::connect(&DatabaseConfig {
            url: backing.database().url().to_owned(),
            ..DatabaseConfig::default()
        })
        .await
        .expect("database");
        migrate(
            &db,
            "pipeline",
            &[EFFECTS, OUTBOX, RELAY, INBOX, INBOX_RETENTION, OUTBOX_RETENTION],
        )
        .await
        .expect("migrations");
        let bus_config = backing.bus_config().clone();
        let bus = Bus::connect(&bus_config).await.expect("bus");
        Self {
            db,
            bus_config,
            bus,
            outbox: Outbox::new(),
            shutdown: CancellationToken::new(),
            _backing: backing,
        }
    }

    pub(crate) fn relay(&self) -> Relay {
        let mut registry = Registry::default();
        Relay::new(
            self.db.clone(),
            self.bus.clone(),
            self.outbox.clone(),
            RelayConfig {
                poll_interval_ms: 50,
                retry_delay_ms: 50,
                ..RelayConfig::default()
            },
            RelayMetrics::register(&mut registry),
        )
    }

    fn start_relay(&self) {
        tokio::spawn(self.relay().run(self.shutdown.clone()));
    }

    pub(crate) fn inbox<H: Handler>(&self, handler: H) -> Inbox<H> {
        self.inbox_with(handler, InboxConfig::default())
    }

    /// An inbox with the tests' short waits on top of `config`.
    fn inbox_with<H: Handler>(&self, handler: H, config: InboxConfig) -> Inbox<H> {
        self.inbox_on(self.bus.clone(), handler, config)
    }

    fn inbox_on<H: Handler>(&self, bus: Bus, handler: H, config: InboxConfig) -> Inbox<H> {
        let mut registry = Registry::default();
        Inbox::new(
            self.db.clone(),
            bus,
            ConsumerSpec {
                group: "effects".into(),
                category: "pipeline".into(),
                event_types: Vec::new(),
            },
            handler,
            InboxConfig {
                backoff_ms: vec![50],
                reorder_delay_ms: 20,
                fetch_wait_ms: 200,
                ..config
            },
            ConsumerMetrics::register(&mut registry),
        )
    }

    fn start_inbox<H: Handler>(&self, handler: H) {
        tokio::spawn(self.inbox(handler).run(self.shutdown.clone()));
    }

    /// The inbox of a second replica of the service, on a connection of its own.
    async fn start_replica<H: Handler>(&self, handler: H) {
        self.start_replica_with(handler, InboxConfig::default()).await;
    }

    async fn start_replica_with<H: Handler>(&self, handler: H, config: InboxConfig) {
        let bus = Bus::connect(&self.bus_config)
            .await
            .expect("second bus connection");
        tokio::spawn(self.inbox_on(bus, handler, config).run(self.shutdown.clone()));
    }

    /// Appends event `n` of `stream` in its own transaction, as a service would.
    pub(crate) async fn append(&self, stream: &str, n: i64) -> Envelope {
        self.append_typed(stream, n, "Noted").await
    }

    /// Event `n` of `stream`, as an event of type `event_type`.
    async fn append_typed(&self, stream: &str, n: i64, event_type: &str) -> Envelope {
        let mut envelope =
            Envelope::new("pipeline", stream, &Noted { n }, &Context::default()).expect("envelope");
        envelope.event_type = event_type.to_owned();
        let mut tx = self.db.begin().await.expect("begin");
        outbox::append(&mut tx, &mut envelope)
            .await
            .expect("append to the outbox");
        tx.commit().await.expect("commit");
        self.outbox.committed();
        envelope
    }

    /// (member, event id, stream, n) of every effect, in the order they committed.
    pub(crate) async fn effects(&self) -> Vec<(String, String, String, i64)> {
        sqlx::query("SELECT member, event_id, stream_id, n FROM effects ORDER BY position")
            .fetch_all(self.db.pool())
            .await
            .expect("effects")
            .iter()
            .map(|r| (r.get("member"), r.get("event_id"), r.get("stream_id"), r.get("n")))
            .collect()
    }

    /// The commit each event's effect was part of, by event number.
    async fn batches(&self) -> std::collections::HashMap<i64, i64> {
        sqlx::query("SELECT n, batch FROM effects")
            .fetch_all(self.db.pool())
            .await
            .expect("effects")
            .iter()
            .map(|r| (r.get("n"), r.get("batch")))
            .collect()
    }

    async fn wait_for_dead_letters(&self) -> Vec<mercato_messaging::DeadLetter> {
        eventually(PATIENCE, "the poison message in the dead letters", || async {
            let letters = self.bus.dead_letters(10).await.ok()?;
            (!letters.is_empty()).then_some(letters)
        })
        .await
    }

    async fn assert_no_dead_letters(&self) {
        let letters = self.bus.dead_letters(10).await.expect("dead letters");
        assert!(letters.is_empty(), "nothing was parked: {letters:?}");
    }

    /// Waits until the inbox's group (of `event_types`) has settled every delivery.
    async fn wait_for_group_to_settle(&self, event_types: Vec<String>) {
        let watcher = self
            .bus
            .consumer(&ConsumerSpec {
                group: "effects".into(),
                category: "pipeline".into(),
                event_types,
            })
            .await
            .expect("watch the group");
        eventually(PATIENCE, "the group to settle every delivery", || async {
            (watcher.lag().await.ok()? == 0).then_some(())
        })
        .await;
    }

    /// Waits until the relay has published everything appended so far.
    async fn wait_for_relay(&self) {
        eventually(PATIENCE, "the outbox to be marked sent", || async {
            (self.relay().backlog().await.ok()?.0 == 0).then_some(())
        })
        .await;
    }

    async fn wait_for_effects(&self, count: usize) -> Vec<(String, String, String, i64)> {
        eventually(PATIENCE, &format!("{count} effects"), || async {
            let effects = self.effects().await;
            (effects.len() >= count).then_some(effects)
        })
        .await
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Writes one effect row per event, in the inbox's transaction; can be told to fail.
#[derive(Clone, Default)]
pub(crate) struct Recording {
    member: &'static str,
    /// Event numbers whose first attempt fails (transiently).
    flaky: Arc<std::sync::Mutex<HashSet<i64>>>,
    /// Event numbers that always fail (permanently).
    poison: HashSet<i64>,
    /// When set, the handler writes its effect and then waits here forever: a crash mid-handler.
    hang: Option<Arc<Notify>>,
    /// Transactions committed so far: an effect records it, so effects that share the number
    /// committed together.
    commits: Arc<AtomicI64>,
    /// The event types it takes; empty for all.
    types: &'static [&'static str],
    /// Handles in the open transaction, and those whose transaction committed, as the inbox's
    /// `committed` and `rolled_back` report them.
    open: Arc<AtomicI64>,
    kept: Arc<AtomicI64>,
    /// When set, the handler tells the first and waits for the second before it records.
    pause: Option<(Arc<Notify>, Arc<Notify>)>,
    /// Workers made so far by `for_worker`; each records under a name of its own.
    workers: Arc<AtomicUsize>,
    /// Every `handle` so far, undone or not.
    calls: Arc<AtomicI64>,
}

/// The member names of a handler's extra workers.
const WORKERS: [&str; 7] = ["w1", "w2", "w3", "w4", "w5", "w6", "w7"];

impl Recording {
    pub(crate) fn member(member: &'static str) -> Self {
        Self {
            member,
            ..Self::default()
        }
    }

    async fn record(&self, envelope: &Envelope, tx: &mut Tx) -> Result<(), HandlerError> {
        // The payload whatever the envelope's type: tests give `Noted` payloads several types.
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.open.fetch_add(1, Ordering::SeqCst);
        let event: Noted = serde_json::from_value(envelope.payload.clone())
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        if self.poison.contains(&event.n) {
            return Err(HandlerError::Permanent(format!(
                "event {} can never be applied",
                event.n
            )));
        }
        if let Some((started, resume)) = &self.pause {
            started.notify_one();
            resume.notified().await;
        }
        if self.flaky.lock().unwrap().remove(&event.n) {
            return Err(HandlerError::Transient(format!("event {} failed once", event.n)));
        }
        sqlx::query(
            "INSERT INTO effects (member, event_id, stream_id, n, batch) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(self.member)
        .bind(&envelope.id)
        .bind(&envelope.stream_id)
        .bind(event.n)
        .bind(self.commits.load(Ordering::SeqCst))
        .execute(&mut **tx)
        .await
        .map_err(|e| HandlerError::Transient(e.to_string()))?;
        if let Some(hang) = &self.hang {
            hang.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

impl Handler for Recording {
    fn handle<'a>(&'a self, envelope: &'a Envelope, tx: &'a mut Tx) -> HandlerFuture<'a> {
        Box::pin(self.record(envelope, tx))
    }

    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.kept
            .fetch_add(self.open.swap(0, Ordering::SeqCst), Ordering::SeqCst);
    }

    fn rolled_back(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    fn event_types(&self) -> &[&'static str] {
        self.types
    }

    /// Its own open transaction's count; the rest shared.
    fn for_worker(&self) -> Option<Self> {
        let worker = self.workers.fetch_add(1, Ordering::SeqCst);
        Some(Self {
            member: WORKERS[worker % WORKERS.len()],
            open: Arc::default(),
            ..self.clone()
        })
    }
}

/// The handler's `committed` and `rolled_back` hooks account for every handle: `effects` kept,
/// none left open (the hook runs just after the commit that made the effects visible).
async fn assert_hooks_counted(handler: &Recording, effects: i64) {
    let counts = || {
        (
            handler.kept.load(Ordering::SeqCst),
            handler.open.load(Ordering::SeqCst),
        )
    };
    eventually(PATIENCE, &format!("hooks to count {effects} kept"), || async {
        (counts() == (effects, 0)).then_some(())
    })
    .await;
}

fn numbers_of(effects: &[(String, String, String, i64)], stream: &str) -> Vec<i64> {
    effects.iter().filter(|e| e.2 == stream).map(|e| e.3).collect()
}

fn assert_each_event_once(effects: &[(String, String, String, i64)]) {
    let mut seen = HashSet::new();
    for (_, id, _, _) in effects {
        assert!(seen.insert(id.clone()), "event {id} took effect twice");
    }
}

async fn a_streams_events_reach_the_handler_in_order_even_when_one_is_redelivered(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    let handler = Recording::member("one");
    handler.flaky.lock().unwrap().extend([3, 7]);
    pipeline.start_relay();
    pipeline.start_inbox(handler);
    for n in 1..=10 {
        pipeline.append("order-a", n).await;
        pipeline.append("order-b", n).await;
    }
    let effects = pipeline.wait_for_effects(20).await;
    assert_each_event_once(&effects);
    assert_eq!(numbers_of(&effects, "order-a"), (1..=10).collect::<Vec<_>>());
    assert_eq!(numbers_of(&effects, "order-b"), (1..=10).collect::<Vec<_>>());
}

async fn a_relay_that_crashed_between_publishing_and_marking_causes_no_second_effect(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    let mut appended = Vec::new();
    for n in 1..=5 {
        appended.push(pipeline.append("crash", n).await);
    }
    // A relay that published every row and died before marking any: exactly what it sent.
    for envelope in &appended {
        let stored: Envelope = {
            let row = sqlx::query("SELECT envelope FROM outbox WHERE event_id = $1")
                .bind(&envelope.id)
                .fetch_one(pipeline.db.pool())
                .await
                .expect("outbox row");
            serde_json::from_str(row.get::<&str, _>("envelope")).expect("stored envelope")
        };
        pipeline.bus.publish(&stored).await.expect("publish");
    }
    let (backlog, _) = pipeline.relay().backlog().await.expect("backlog");
    assert_eq!(backlog, 5, "nothing was marked sent");

    // The next relay publishes them all again; the consumer applies each once.
    pipeline.start_relay();
    pipeline.start_inbox(Recording::member("one"));
    let effects = pipeline.wait_for_effects(5).await;
    eventually(PATIENCE, "the outbox to be marked sent", || async {
        (pipeline.relay().backlog().await.ok()?.0 == 0).then_some(())
    })
    .await;
    // Every delivery, duplicates included, is settled once the group has no lag.
    pipeline.wait_for_group_to_settle(Vec::new()).await;
    let after = pipeline.effects().await;
    assert_eq!(after.len(), 5, "{after:?}");
    assert_each_event_once(&after);
    assert_eq!(numbers_of(&effects, "crash"), [1, 2, 3, 4, 5]);
}

async fn a_consumer_that_crashes_mid_handler_gets_the_event_again_and_applies_it_once(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    pipeline.start_relay();
    let hung = Arc::new(Notify::new());
    let crashing = Recording {
        member: "crashed",
        hang: Some(Arc::clone(&hung)),
        ..Recording::default()
    };
    let first = tokio::spawn(pipeline.inbox(crashing).run(pipeline.shutdown.clone()));
    pipeline.append("mid", 1).await;
    tokio::time::timeout(PATIENCE, hung.notified())
        .await
        .expect("the handler started");
    // The process dies: the task is gone, its transaction rolls back, nothing was acked.
    first.abort();
    let _ = first.await;
    assert!(
        pipeline.effects().await.is_empty(),
        "the crashed handler's effect rolled back"
    );

    pipeline.start_inbox(Recording::member("restarted"));
    let effects = pipeline.wait_for_effects(1).await;
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].0, "restarted");
    pipeline.append("mid", 2).await;
    let effects = pipeline.wait_for_effects(2).await;
    assert_each_event_once(&effects);
    assert_eq!(numbers_of(&effects, "mid"), [1, 2]);
}

async fn two_members_of_a_group_split_the_work_and_no_event_is_handled_by_both(backend: TestBackend) {
    // No member is lost here: an ack wait longer than a busy machine's slowest batch keeps
    // redeliveries of work still in hand from using up an event's attempts and parking it.
    let pipeline = Pipeline::start_with_ack_wait(backend, 5_000).await;
    pipeline.start_relay();
    for n in 1..=10 {
        for s in 0..20 {
            pipeline.append(&format!("split-{s}"), n).await;
        }
    }
    // All 200 wait on the bus before either member starts, and each takes a few at a time: the
    // members meet the same backlog, instead of the one in the publisher's process being woken
    // by every publish and the other, another process, finding the log empty when it looks.
    eventually(PATIENCE, "the outbox to be published", || async {
        (pipeline.relay().backlog().await.ok()?.0 == 0).then_some(())
    })
    .await;
    let few = || InboxConfig {
        batch_size: 4,
        ..InboxConfig::default()
    };
    pipeline.start_replica_with(Recording::member("b"), few()).await;
    tokio::spawn(
        pipeline
            .inbox_with(Recording::member("a"), few())
            .run(pipeline.shutdown.clone()),
    );
    let effects = pipeline.wait_for_effects(200).await;
    assert_each_event_once(&effects);
    let by_a = effects.iter().filter(|e| e.0 == "a").count();
    let by_b = effects.iter().filter(|e| e.0 == "b").count();
    assert_eq!(by_a + by_b, 200);
    assert!(by_a > 0 && by_b > 0, "both members took work: a={by_a} b={by_b}");
    for s in 0..20 {
        assert_eq!(
            numbers_of(&effects, &format!("split-{s}")),
            (1..=10).collect::<Vec<_>>()
        );
    }
}

async fn a_poison_message_is_parked_with_its_error_and_the_consumer_keeps_going(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    pipeline.start_relay();
    pipeline.start_inbox(Recording {
        member: "one",
        poison: HashSet::from([2]),
        ..Recording::default()
    });
    let mut appended = Vec::new();
    for n in 1..=4 {
        appended.push(pipeline.append("poisoned", n).await);
    }
    let effects = pipeline.wait_for_effects(3).await;
    assert_eq!(
        numbers_of(&effects, "poisoned"),
        [1, 3, 4],
        "the stream moved past the parked event"
    );
    let letters = pipeline.wait_for_dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].envelope.id, appended[1].id);
    assert_eq!(letters[0].group, "effects");
    assert!(
        letters[0].error.contains("can never be applied"),
        "{}",
        letters[0].error
    );
}

/// Appends streams a (1, 2), b (3, 4) and c (5, 6) and lets the relay publish them all, so the
/// inbox's first fetch holds all six.
async fn six_published(pipeline: &Pipeline) {
    for (stream, n) in [("a", 1), ("b", 3), ("c", 5), ("a", 2), ("b", 4), ("c", 6)] {
        pipeline.append(stream, n).await;
    }
    pipeline.start_relay();
    pipeline.wait_for_relay().await;
}

async fn a_failing_message_in_a_batch_is_retried_alone_while_the_others_commit_once(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    six_published(&pipeline).await;
    let handler = Recording::member("one");
    handler.flaky.lock().unwrap().insert(3);
    pipeline.start_inbox(handler.clone());

    let effects = pipeline.wait_for_effects(6).await;
    assert_each_event_once(&effects);
    assert_eq!(numbers_of(&effects, "a"), [1, 2]);
    assert_eq!(
        numbers_of(&effects, "b"),
        [3, 4],
        "4 waited for its retried predecessor"
    );
    assert_eq!(numbers_of(&effects, "c"), [5, 6]);
    let batches = pipeline.batches().await;
    let first = batches[&1];
    for n in [2, 5, 6] {
        assert_eq!(
            batches[&n], first,
            "event {n} committed with the rest of its batch: {batches:?}"
        );
    }
    assert!(
        batches[&3] > first,
        "the failed event committed later, on its own: {batches:?}"
    );
    assert_hooks_counted(&handler, 6).await;
    pipeline.assert_no_dead_letters().await;
}

async fn a_poison_message_in_a_batch_is_parked_alone_and_its_successor_commits_with_the_others(
    backend: TestBackend,
) {
    let pipeline = Pipeline::start(backend).await;
    six_published(&pipeline).await;
    let handler = Recording {
        member: "one",
        poison: HashSet::from([3]),
        ..Recording::default()
    };
    pipeline.start_inbox(handler.clone());

    let effects = pipeline.wait_for_effects(5).await;
    assert_each_event_once(&effects);
    assert_eq!(
        numbers_of(&effects, "b"),
        [4],
        "the stream moved past the parked event"
    );
    let batches = pipeline.batches().await;
    for n in [2, 4, 5, 6] {
        assert_eq!(
            batches[&n], batches[&1],
            "event {n} committed in the one transaction: {batches:?}"
        );
    }
    let letters = pipeline.wait_for_dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].envelope.stream_id, "b");
    assert_eq!(letters[0].envelope.stream_seq, 1);
    assert_hooks_counted(&handler, 5).await;
}

async fn the_relay_marks_only_the_rows_the_bus_acknowledged_and_they_arrive_in_order(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    let mut appended = Vec::new();
    for n in 1..=3 {
        appended.push(pipeline.append("relayed", n).await);
    }
    // A row no bus accepts (its category cannot be a subject), then two good ones after it.
    let mut refused = Envelope::new(
        "no.such category",
        "relayed",
        &Noted { n: 4 },
        &Context::default(),
    )
    .expect("envelope");
    let mut tx = pipeline.db.begin().await.expect("begin");
    outbox::append(&mut tx, &mut refused).await.expect("append");
    tx.commit().await.expect("commit");
    for n in 5..=6 {
        pipeline.append("relayed", n).await;
    }

    let error = pipeline.relay().publish_pending().await.unwrap_err();
    assert!(error.to_string().contains("category"), "{error}");
    let marked: Vec<String> =
        sqlx::query("SELECT event_id FROM outbox WHERE published_at IS NOT NULL ORDER BY position")
            .fetch_all(pipeline.db.pool())
            .await
            .expect("marked rows")
            .iter()
            .map(|r| r.get("event_id"))
            .collect();
    let first_three: Vec<String> = appended.iter().map(|e| e.id.clone()).collect();
    assert_eq!(marked, first_three, "only the acknowledged prefix is marked");

    let mut listener = mercato_testkit::listener::Listener::join(&pipeline.bus, "watch", "pipeline").await;
    listener
        .wait_for("the third event", |e| e.id == appended[2].id)
        .await;
    let seen: Vec<String> = listener.seen.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        seen, first_three,
        "published in order, nothing after the refused row"
    );
}

async fn a_group_of_some_types_applies_them_in_stream_order_through_retries(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    pipeline.start_relay();
    let handler = Recording {
        member: "one",
        types: &["A", "C"],
        ..Recording::default()
    };
    handler.flaky.lock().unwrap().extend([3, 5, 8]);
    // Never give up on a predecessor: waiting for an event the group will not receive would hang.
    let config = InboxConfig {
        max_reorder_waits: u32::MAX,
        ..InboxConfig::default()
    };
    tokio::spawn(
        pipeline
            .inbox_with(handler, config)
            .run(pipeline.shutdown.clone()),
    );
    let types = ["A", "B", "C", "B", "A", "B", "C", "A"];
    for (seq, event_type) in (1..).zip(types) {
        for s in 0..5 {
            pipeline
                .append_typed(&format!("typed-{s}"), seq, event_type)
                .await;
        }
    }

    let effects = pipeline.wait_for_effects(25).await;
    pipeline
        .wait_for_group_to_settle(vec!["A".into(), "C".into()])
        .await;
    let effects_after = pipeline.effects().await;
    assert_eq!(
        effects_after.len(),
        25,
        "no B reached the handler: {effects_after:?}"
    );
    assert_each_event_once(&effects);
    for s in 0..5 {
        assert_eq!(numbers_of(&effects, &format!("typed-{s}")), [1, 3, 5, 7, 8]);
    }
    pipeline.assert_no_dead_letters().await;
}

async fn a_consumer_told_to_stop_mid_batch_hands_the_rest_to_another_member_at_once(backend: TestBackend) {
    // Longer than the test waits: what the stopping member held comes back only if handed back.
    let pipeline = Pipeline::start_with_ack_wait(backend, 60_000).await;
    pipeline.start_relay();
    for s in 1..=5 {
        pipeline.append(&format!("batch-{s}"), 1).await;
    }
    eventually(PATIENCE, "every event published", || async {
        (pipeline.relay().backlog().await.ok()?.0 == 0).then_some(())
    })
    .await;
    let (started, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let stopping = CancellationToken::new();
    let first = tokio::spawn(
        pipeline
            .inbox(Recording {
                member: "stopping",
                pause: Some((Arc::clone(&started), Arc::clone(&resume))),
                ..Recording::default()
            })
            .run(stopping.clone()),
    );
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the first event is being handled");
    // A second replica waits for work the first one holds.
    pipeline.start_replica(Recording::member("staying")).await;

    stopping.cancel();
    resume.notify_one();
    mercato_testkit::joined("the stopping consumer to return", first).await;

    let effects = pipeline.wait_for_effects(5).await;
    assert_each_event_once(&effects);
    let by_stopping = effects.iter().filter(|e| e.0 == "stopping").count();
    assert_eq!(by_stopping, 1, "it finished the event in hand only: {effects:?}");
}

async fn several_workers_keep_each_streams_order_through_retries_and_apply_every_event_once(
    backend: TestBackend,
) {
    let pipeline = Pipeline::start(backend).await;
    pipeline.start_relay();
    let handler = Recording::member("w0");
    handler.flaky.lock().unwrap().extend([2, 3, 5]);
    let config = InboxConfig {
        workers: 4,
        batch_size: 4,
        ..InboxConfig::default()
    };
    tokio::spawn(
        pipeline
            .inbox_with(handler.clone(), config)
            .run(pipeline.shutdown.clone()),
    );
    for n in 1..=6 {
        for s in 0..8 {
            pipeline.append(&format!("parallel-{s}"), n).await;
        }
    }

    pipeline.wait_for_effects(48).await;
    pipeline.wait_for_group_to_settle(Vec::new()).await;
    let effects = pipeline.effects().await;
    assert_eq!(effects.len(), 48, "{effects:?}");
    assert_each_event_once(&effects);
    let mut members = HashSet::new();
    for s in 0..8 {
        let stream = format!("parallel-{s}");
        assert_eq!(numbers_of(&effects, &stream), (1..=6).collect::<Vec<_>>());
        let applied_by: HashSet<_> = effects.iter().filter(|e| e.2 == stream).map(|e| &e.0).collect();
        assert_eq!(
            applied_by.len(),
            1,
            "{stream} went to one worker, not {applied_by:?}"
        );
        members.extend(applied_by);
    }
    assert!(
        members.len() > 1,
        "the streams were spread over the workers: {members:?}"
    );
    assert_eq!(
        handler.workers.load(Ordering::SeqCst),
        4,
        "each worker has a handler of its own"
    );
    eventually(
        PATIENCE,
        "every effect counted as kept once committed",
        || async { (handler.kept.load(Ordering::SeqCst) == 48).then_some(()) },
    )
    .await;
    pipeline.assert_no_dead_letters().await;
}

async fn an_event_naming_a_source_that_may_not_produce_it_is_refused_for_good(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    let inbox = pipeline.inbox(Recording::member("a"));
    let genuine = pipeline.append("order-1", 1).await;
    let forged = mercato_messaging::Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        source: "payments".into(),
        stream_seq: 2,
        ..genuine.clone()
    };
    let refused = inbox
        .apply(&forged, 1)
        .await
        .expect_err("a forged source was applied");
    assert!(
        matches!(&refused, HandlerError::Permanent(reason) if reason.contains("payments")),
        "{refused:?}"
    );
    assert_eq!(inbox.apply(&genuine, 1).await.expect("apply"), Outcome::Applied);
    assert_eq!(
        pipeline.effects().await.len(),
        1,
        "the forged event had an effect"
    );
}

async fn a_redelivered_event_is_refused_by_its_record_before_the_handler_runs(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    let handler = Recording::member("a");
    let inbox = pipeline.inbox(handler.clone());
    let first = pipeline.append("order-1", 1).await;
    let second = pipeline.append("order-1", 2).await;
    assert_eq!(inbox.apply(&first, 1).await.expect("apply"), Outcome::Applied);
    assert_eq!(
        inbox.apply(&first, 2).await.expect("redeliver"),
        Outcome::Duplicate
    );
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        1,
        "the duplicate never reached the handler"
    );
    // The duplicate's rolled-back savepoint took nothing else with it: the stream goes on.
    assert_eq!(inbox.apply(&second, 1).await.expect("apply"), Outcome::Applied);
    assert_eq!(numbers_of(&pipeline.effects().await, "order-1"), [1, 2]);
    assert_hooks_counted(&handler, 2).await;
}

async fn each_stream_in_the_outbox_is_numbered_from_one_and_each_row_holds_its_number(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    // Appends to two streams at once, each in its own transaction.
    let appended = futures_util::future::join_all(
        (1..=6).map(|n| pipeline.append(if n % 2 == 0 { "even" } else { "odd" }, n)),
    )
    .await;
    let rows: Vec<(String, String, i64, String)> =
        sqlx::query_as("SELECT event_id, stream_id, stream_seq, envelope FROM outbox ORDER BY position")
            .fetch_all(pipeline.db.pool())
            .await
            .expect("outbox rows");
    assert_eq!(rows.len(), 6);
    for stream in ["even", "odd"] {
        let mut numbers: Vec<i64> = rows.iter().filter(|r| r.1 == stream).map(|r| r.2).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, [1, 2, 3], "{stream}: {rows:?}");
    }
    for (event_id, _, stream_seq, body) in &rows {
        let stored: Envelope = serde_json::from_str(body).expect("the row's envelope");
        assert_eq!(stored.stream_seq, *stream_seq, "{body}");
        let given = appended.iter().find(|e| &e.id == event_id).expect("appended");
        assert_eq!(&stored, given, "the row holds the envelope as the caller has it");
    }
}

async fn two_members_applying_one_event_at_once_keep_one_effect(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    let event = pipeline.append("race", 1).await;
    let (started, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let slow = pipeline.inbox(Recording {
        member: "slow",
        pause: Some((Arc::clone(&started), Arc::clone(&resume))),
        ..Recording::default()
    });
    let fast = pipeline.inbox(Recording::member("fast"));
    let slow = {
        let event = event.clone();
        tokio::spawn(async move { slow.apply(&event, 1).await })
    };
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the slow member is handling the event");
    // Both found no record of the event when their batches began. On PostgreSQL the fast one
    // commits first, and the slow one's record then conflicts: its whole batch rolls back. On
    // SQLite the fast one's transaction waits for the slow one's, then finds its record.
    let (fast_outcome, slow_outcome) = match backend {
        TestBackend::Postgres => {
            let fast_outcome = fast.apply(&event, 1).await;
            resume.notify_one();
            (
                fast_outcome,
                mercato_testkit::joined("the slow member", slow).await,
            )
        }
        TestBackend::Sqlite => {
            let fast_outcome = tokio::spawn({
                let event = event.clone();
                async move { fast.apply(&event, 1).await }
            });
            resume.notify_one();
            let slow_outcome = mercato_testkit::joined("the slow member", slow).await;
            (
                mercato_testkit::joined("the fast member", fast_outcome).await,
                slow_outcome,
            )
        }
    };
    let outcomes = [&fast_outcome, &slow_outcome];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Outcome::Applied)))
            .count(),
        1,
        "one applied: {outcomes:?}"
    );
    let effects = pipeline.effects().await;
    assert_eq!(effects.len(), 1, "{effects:?}");
    // The one that did not apply, delivered again, finds the event handled.
    let again = pipeline.inbox(Recording::member("again"));
    assert_eq!(
        again.apply(&event, 2).await.expect("apply again"),
        Outcome::Duplicate
    );
    assert_eq!(pipeline.effects().await.len(), 1);
}
