//! Broadcast subscriptions: every subscriber gets every event published after it subscribed, and
//! is told when it may have missed some.

use mercato_messaging::{Broadcast, BusError, Envelope, Subscription};
use tokio::time::timeout;

use crate::support::{BusBackend, PATIENCE, TestBroker, ids, noted, noted_run, publish_all};

bus_tests!(
    every_subscriber_gets_every_event_published_after_it_subscribed,
    a_subscriber_sees_what_another_connection_publishes,
    a_subscriber_hears_of_a_gap_when_the_broker_restarts_and_then_goes_on,
    a_category_no_broker_accepts_is_refused,
);

/// The next `count` events, failing the test on a gap or after [`PATIENCE`].
async fn events(subscription: &mut Subscription, count: usize) -> Vec<Envelope> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        match timeout(PATIENCE, subscription.next()).await {
            Ok(Ok(Broadcast::Event(envelope))) => received.push(envelope),
            Ok(Ok(Broadcast::Gap)) => panic!("unexpected gap after {} events", received.len()),
            Ok(Err(e)) => panic!("subscription failed: {e}"),
            Err(_) => panic!(
                "received {} of {count} events within {PATIENCE:?}",
                received.len()
            ),
        }
    }
    received
}

async fn every_subscriber_gets_every_event_published_after_it_subscribed(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let before = noted("inventory", "MUG-001", 1);
    bus.publish(&before).await.unwrap();
    let mut first = bus.subscribe("inventory").await.unwrap();
    let mut second = bus.subscribe("inventory").await.unwrap();
    let mut other_category = bus.subscribe("customers").await.unwrap();

    let sent = noted_run("inventory", "MUG-001", 2..=6);
    publish_all(&bus, &sent).await;
    let elsewhere = noted("customers", "c-1", 1);
    bus.publish(&elsewhere).await.unwrap();

    assert_eq!(ids(&events(&mut first, 5).await), ids(&sent));
    assert_eq!(ids(&events(&mut second, 5).await), ids(&sent));
    assert_eq!(ids(&events(&mut other_category, 1).await), ids(&[elsewhere]));
}

async fn a_subscriber_sees_what_another_connection_publishes(backend: BusBackend) {
    let broker = TestBroker::start(backend).await;
    let listener = broker.connect().await;
    // A second pool on the bus file (or a second client): a publish there wakes nothing here, so
    // the subscription must find it by itself.
    let publisher = broker.connect().await;
    let mut subscription = listener.subscribe("inventory").await.unwrap();

    let sent = noted("inventory", "TEE-BLK-M", 1);
    publisher.publish(&sent).await.unwrap();

    assert_eq!(events(&mut subscription, 1).await, vec![sent]);
}

async fn a_subscriber_hears_of_a_gap_when_the_broker_restarts_and_then_goes_on(backend: BusBackend) {
    let mut broker = TestBroker::start(backend).await;
    let bus = broker.connect().await;
    let mut subscription = bus.subscribe("inventory").await.unwrap();
    let first = noted("inventory", "MUG-001", 1);
    bus.publish(&first).await.unwrap();
    assert_eq!(events(&mut subscription, 1).await, vec![first]);

    if broker.stop().await {
        broker.restart().await;
        let gap = timeout(PATIENCE, subscription.next())
            .await
            .expect("a gap within the patience");
        assert!(matches!(gap, Ok(Broadcast::Gap)), "expected a gap, got {gap:?}");
        // Once a publish goes through again the subscription is back on the server.
        let after = noted("inventory", "MUG-001", 2);
        mercato_testkit::eventually(PATIENCE, "a publish after the restart", || async {
            bus.publish(&after).await.ok()
        })
        .await;
        let next = loop {
            match timeout(PATIENCE, subscription.next()).await.expect("an event") {
                Ok(Broadcast::Gap) => {}
                Ok(Broadcast::Event(envelope)) => break envelope,
                Err(e) => panic!("subscription failed: {e}"),
            }
        };
        assert_eq!(next, after);
    } else {
        // The embedded bus has no broker to lose: its subscriptions never see a gap.
        let after = noted("inventory", "MUG-001", 2);
        bus.publish(&after).await.unwrap();
        assert_eq!(events(&mut subscription, 1).await, vec![after]);
    }
}

async fn a_category_no_broker_accepts_is_refused(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    for bad in ["", "a.b", "a>", "dlq", "has space"] {
        assert!(
            matches!(bus.subscribe(bad).await, Err(BusError::Config(_))),
            "{bad:?} accepted"
        );
    }
}
