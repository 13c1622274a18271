//! Bounded disk: the embedded log trims what every group has passed once its replay window went
//! by, and keeps what a group has not passed, holds or parked; the inbox prunes dedup records and
//! the relay published outbox rows after their windows, on SQLite and on PostgreSQL, and a
//! redelivery inside the window is still recognised.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mercato_messaging::Bus;
use mercato_messaging::inbox::Outcome;
use mercato_storage::sqlx;
use mercato_testkit::{TestBackend, backend_tests, eventually};

use crate::pipeline::{Pipeline, Recording};
use crate::support::{
    BusBackend, PATIENCE, TestBroker, ack_all, assert_nothing_more, ids, noted_run, publish_all, receive,
    spec,
};

backend_tests!(
    dedup_records_past_the_window_are_pruned_and_a_redelivery_inside_it_is_still_skipped,
    published_outbox_rows_past_the_window_are_pruned_and_unpublished_rows_stay,
);

const HOUR: Duration = Duration::from_secs(3_600);

/// The embedded bus of `bus`; these tests are about its file.
fn embedded(bus: &Bus) -> &mercato_messaging::bus::embedded::EmbeddedBus {
    match bus {
        Bus::Embedded(bus) => bus,
        Bus::Nats(_) => unreachable!("the log trimmed here is the embedded bus's"),
    }
}

/// Trims with an empty window until `expected` messages went in all: a message published in
/// this very millisecond is not yet older than the window.
async fn trim_now(bus: &Bus, expected: u64) {
    let trimmed = AtomicU64::new(0);
    eventually(PATIENCE, &format!("{expected} messages trimmed"), || async {
        let now = embedded(bus).trim(Duration::ZERO).await.ok()?;
        (trimmed.fetch_add(now, Ordering::SeqCst) + now >= expected).then_some(())
    })
    .await;
    assert_eq!(
        trimmed.into_inner(),
        expected,
        "trimmed more than what every group passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_trims_what_every_group_passed_once_its_window_went_by() {
    let broker = TestBroker::start(BusBackend::Embedded).await;
    let bus = broker.connect().await;
    let mut fast = bus.consumer(&spec("fast", "retained")).await.expect("fast");
    let mut slow = bus.consumer(&spec("slow", "retained")).await.expect("slow");
    let events = noted_run("retained", "s-1", 1..=6);
    publish_all(&bus, &events).await;

    ack_all(receive(&mut fast, 6).await).await;
    let mut held = receive(&mut slow, 3).await;
    let third = held.pop().expect("the third event");
    ack_all(held).await;

    // Inside the window nothing goes, whoever has passed it.
    assert_eq!(embedded(&bus).trim(HOUR).await.expect("trim"), 0);
    // Past it, only what both groups passed: 1 and 2. The third is in slow's hand, the rest
    // slow has not reached.
    trim_now(&bus, 2).await;

    let mut late = bus.consumer(&spec("late", "retained")).await.expect("late");
    let kept = ack_all(receive(&mut late, 4).await).await;
    assert_eq!(
        ids(&kept),
        ids(&events[2..]),
        "a new group starts at the oldest message kept"
    );
    assert_nothing_more(&mut late).await;

    // The held message is still there to be acknowledged, and slow goes on where it was.
    third.ack().await.expect("ack the held message");
    let rest = ack_all(receive(&mut slow, 3).await).await;
    assert_eq!(ids(&rest), ids(&events[3..]));
    trim_now(&bus, 4).await;
    assert_nothing_more(&mut slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_message_stays_in_the_log_until_it_is_replayed() {
    let broker = TestBroker::start(BusBackend::Embedded).await;
    let bus = broker.connect().await;
    let mut group = bus.consumer(&spec("parks", "retained")).await.expect("group");
    let events = noted_run("retained", "s-1", 1..=2);
    publish_all(&bus, &events).await;
    let mut deliveries = receive(&mut group, 2).await;
    let poison = deliveries.remove(0);
    poison.park("cannot be applied").await.expect("park");
    ack_all(deliveries).await;

    trim_now(&bus, 1).await;
    let letters = bus.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].envelope.id, events[0].id,
        "the parked envelope is still readable"
    );

    assert!(bus.replay_dead_letter(&letters[0].id).await.expect("replay"));
    let replayed = ack_all(receive(&mut group, 1).await).await;
    assert_eq!(ids(&replayed), ids(&events[..1]));
    trim_now(&bus, 1).await;
}

/// This subscriber's dedup records.
async fn dedup_records(pipeline: &Pipeline) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM inbox_processed WHERE subscriber = $1")
        .bind("effects")
        .fetch_one(pipeline.db.pool())
        .await
        .expect("count dedup records")
}

async fn dedup_records_past_the_window_are_pruned_and_a_redelivery_inside_it_is_still_skipped(
    backend: TestBackend,
) {
    let pipeline = Pipeline::start(backend).await;
    let inbox = pipeline.inbox(Recording::member("a"));
    let first = pipeline.append("order-1", 1).await;
    let second = pipeline.append("order-1", 2).await;
    assert_eq!(inbox.apply(&first, 1).await.expect("apply"), Outcome::Applied);

    // Inside the window the record stays, and a redelivery changes nothing.
    assert_eq!(inbox.prune(HOUR).await.expect("prune"), 0);
    assert_eq!(
        inbox.apply(&first, 2).await.expect("redeliver"),
        Outcome::Duplicate
    );
    assert_eq!(dedup_records(&pipeline).await, 1);

    // Past it the record goes (once the clock moved past the moment it was written).
    eventually(PATIENCE, "the dedup record pruned", || async {
        inbox.prune(Duration::ZERO).await.ok()?;
        (dedup_records(&pipeline).await == 0).then_some(())
    })
    .await;
    // The stream's position stays: its next event is applied at once, not held as early.
    assert_eq!(inbox.apply(&second, 1).await.expect("apply"), Outcome::Applied);
    let applied: Vec<i64> = pipeline
        .effects()
        .await
        .into_iter()
        .map(|(_, _, _, n)| n)
        .collect();
    assert_eq!(applied, [1, 2]);
}

/// (published, unpublished) rows of the outbox.
async fn outbox_rows(pipeline: &Pipeline) -> (i64, i64) {
    sqlx::query_as("SELECT COUNT(published_at), COUNT(*) - COUNT(published_at) FROM outbox")
        .fetch_one(pipeline.db.pool())
        .await
        .expect("count outbox rows")
}

async fn published_outbox_rows_past_the_window_are_pruned_and_unpublished_rows_stay(backend: TestBackend) {
    let pipeline = Pipeline::start(backend).await;
    let relay = pipeline.relay();
    for n in 1..=3 {
        pipeline.append("order-1", n).await;
    }
    assert_eq!(relay.publish_pending().await.expect("publish"), 3);
    pipeline.append("order-1", 4).await;

    assert_eq!(relay.prune(HOUR).await.expect("prune"), 0);
    assert_eq!(outbox_rows(&pipeline).await, (3, 1));
    let pruned = AtomicU64::new(0);
    eventually(PATIENCE, "the published rows pruned", || async {
        let now = relay.prune(Duration::ZERO).await.ok()?;
        (pruned.fetch_add(now, Ordering::SeqCst) + now >= 3).then_some(())
    })
    .await;
    assert_eq!(pruned.into_inner(), 3);
    assert_eq!(outbox_rows(&pipeline).await, (0, 1), "the unpublished row stays");
    // The stream goes on from its position, not from the rows that are left.
    assert_eq!(relay.publish_pending().await.expect("publish"), 1);
    let next = pipeline.append("order-1", 5).await;
    assert_eq!(next.stream_seq, 5);
}
