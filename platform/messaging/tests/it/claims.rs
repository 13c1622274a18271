//! How long a group member keeps what it was handed: while it holds a delivery, however long;
//! after it crashed, only until the bus notices; after it let go of a fetch, not at all.

use std::time::Duration;

use mercato_messaging::BusConfig;
use tokio::time::Instant;

use crate::bus::Waiters;
use crate::support::{
    BusBackend, PATIENCE, TestBroker, ack_all, assert_nothing_more, ids, noted, publish_all, receive,
};

bus_tests!(
    what_a_crashed_member_held_comes_again_to_the_member_that_replaces_it,
    a_delivery_held_past_the_ack_wait_stays_with_its_member_while_a_dropped_one_moves_on,
    a_fetch_given_up_while_it_waits_loses_nothing_it_was_handed,
);

/// An ack wait no test waits out: a message that comes again within [`PATIENCE`] did not wait
/// for it.
fn unreachable_ack_wait(config: BusConfig) -> BusConfig {
    assert!(PATIENCE < Duration::from_secs(60));
    BusConfig {
        ack_wait_ms: 60_000,
        ..config
    }
}

async fn what_a_crashed_member_held_comes_again_to_the_member_that_replaces_it(backend: BusBackend) {
    let broker = TestBroker::start(backend).await;
    let config = match backend {
        // The dead run's lease lapses in seconds, so the ack wait never comes into it.
        BusBackend::Embedded => unreachable_ack_wait(broker.config()),
        // JetStream cannot tell a dead client's deliveries from a slow one's: its ack wait,
        // short because live members keep what they hold in progress, is what returns them.
        BusBackend::Nats => BusConfig {
            ack_wait_ms: 1_000,
            ..broker.config()
        },
    };
    let sent: Vec<_> = (1..=5)
        .map(|n| noted("orders", &format!("order-{n}"), 1))
        .collect();
    {
        let (crashed, mut member) = broker.worker(&config).await;
        publish_all(&crashed, &sent).await;
        let held = receive(&mut member, sent.len()).await;
        assert!(held.iter().all(|d| d.attempt == 1));
        // A crash settles nothing: the connection goes with every delivery unacknowledged.
        drop((held, member, crashed));
    }

    let (_restarted, mut member) = broker.worker(&config).await;
    let again = receive(&mut member, sent.len()).await;

    assert!(
        again.iter().all(|d| d.attempt == 2),
        "{:?}",
        again.iter().map(|d| d.attempt).collect::<Vec<_>>()
    );
    let mut got = ids(&ack_all(again).await);
    got.sort();
    let mut want = ids(&sent);
    want.sort();
    assert_eq!(got, want);
    assert_nothing_more(&mut member).await;
}

async fn a_delivery_held_past_the_ack_wait_stays_with_its_member_while_a_dropped_one_moves_on(
    backend: BusBackend,
) {
    let broker = TestBroker::start(backend).await;
    let config = BusConfig {
        ack_wait_ms: 2_000,
        ..broker.config()
    };
    let (slow_bus, mut slow) = broker.worker(&config).await;
    let (_other_bus, mut other) = broker.worker(&config).await;
    let (kept, dropped) = (noted("orders", "order-1", 1), noted("orders", "order-2", 1));
    publish_all(&slow_bus, &[kept.clone(), dropped.clone()]).await;
    let mut held = receive(&mut slow, 2).await;
    let position = held
        .iter()
        .position(|d| d.envelope.id == dropped.id)
        .expect("both delivered");
    drop(held.remove(position));

    // Three ack waits while a slow handler keeps `kept`: only the dropped one moves on.
    let watched_until = Instant::now() + config.ack_wait() * 3;
    let mut elsewhere = Vec::new();
    while Instant::now() < watched_until {
        let batch = other
            .fetch(10, watched_until.saturating_duration_since(Instant::now()))
            .await
            .unwrap();
        elsewhere.extend(batch.iter().map(|d| (d.envelope.id.clone(), d.attempt)));
        ack_all(batch).await;
    }

    assert_eq!(elsewhere, [(dropped.id.clone(), 2)]);
    let kept_delivery = held.remove(0);
    assert_eq!(
        (kept_delivery.envelope.id.as_str(), kept_delivery.attempt),
        (kept.id.as_str(), 1)
    );
    kept_delivery.ack().await.expect("the holder still settles it");
    assert_nothing_more(&mut other).await;
    assert_nothing_more(&mut slow).await;
}

async fn a_fetch_given_up_while_it_waits_loses_nothing_it_was_handed(backend: BusBackend) {
    let broker = TestBroker::start(backend).await;
    let config = unreachable_ack_wait(broker.config());
    let (leaving_bus, mut leaving) = broker.worker(&config).await;
    let (_staying_bus, mut staying) = broker.worker(&config).await;
    let waiters = Waiters::of(&leaving_bus, &broker, "orders", "workers").await;

    // A member stopping mid-fetch: the fetch waits on the broker, then is dropped.
    let waiting = tokio::spawn(async move { leaving.fetch(10, PATIENCE).await });
    mercato_testkit::eventually(PATIENCE, "the fetch to wait", || async {
        (waiters.count().await > 0).then_some(())
    })
    .await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    let sent = noted("orders", "order-1", 1);
    leaving_bus.publish(&sent).await.unwrap();

    let received = receive(&mut staying, 1).await;
    assert_eq!(received[0].envelope.id, sent.id);
    ack_all(received).await;
    assert_nothing_more(&mut staying).await;
}
