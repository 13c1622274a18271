//! The bus behaviour suite: every test runs on the embedded bus and on NATS JetStream.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use mercato_messaging::bus::embedded::EmbeddedBus;
use mercato_messaging::{Bus, BusConfig, BusError};
use mercato_testkit::eventually;
use tokio::task::JoinSet;

use crate::support::{
    BusBackend, PATIENCE, TestBroker, ack_all, assert_nothing_more, expect_exactly, ids, noted, noted_run,
    publish_all, receive, spec, typed, typed_spec,
};

bus_tests!(
    a_published_envelope_is_delivered_intact,
    publishing_the_same_envelope_twice_delivers_it_once,
    a_group_created_after_publishing_gets_every_message_from_the_start,
    every_group_gets_every_message,
    a_member_that_was_away_gets_what_it_missed,
    a_waiting_fetch_returns_a_message_published_while_it_waits,
    a_message_held_by_one_member_is_not_given_to_another,
    two_members_split_200_messages_with_none_lost_or_held_twice,
    an_unacknowledged_delivery_comes_again_after_the_ack_wait_as_attempt_2,
    a_nak_delivers_the_message_again_after_the_delay,
    a_parked_message_becomes_a_dead_letter_and_replay_returns_it_to_its_group_once,
    messages_survive_closing_the_bus_and_restarting_the_broker,
    ping_fails_while_the_broker_is_down_and_publish_works_again_after_it_returns,
    lag_counts_messages_not_yet_acknowledged,
    one_consumer_receives_a_streams_messages_in_publish_order,
    names_no_broker_accepts_are_refused,
    a_group_joined_again_with_other_settings_keeps_its_messages,
    a_batch_is_published_in_order_and_a_repeat_of_its_ids_is_stored_once,
    a_batch_stops_at_an_envelope_no_broker_accepts_and_keeps_what_came_before,
    a_group_of_some_types_receives_only_those_in_order,
    a_group_whose_types_changed_keeps_its_place_and_gets_only_its_new_types,
);

/// For tests where a redelivery would be a bug rather than the point.
fn patient(config: BusConfig) -> BusConfig {
    BusConfig {
        ack_wait_ms: 30_000,
        ..config
    }
}

async fn a_published_envelope_is_delivered_intact(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let mut sent = noted("identity", "user-1", 1);
    sent.correlation_id = Some("corr-1".into());
    sent.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    sent.payload = serde_json::json!({"n": 1, "nested": {"text": "héllo\nworld", "list": [1, 2.5, null]}});

    bus.publish(&sent).await.unwrap();

    let deliveries = receive(&mut consumer, 1).await;
    assert_eq!(deliveries[0].envelope, sent);
    assert_eq!(deliveries[0].attempt, 1);
    ack_all(deliveries).await;
    assert_nothing_more(&mut consumer).await;
}

async fn publishing_the_same_envelope_twice_delivers_it_once(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let once = noted("identity", "user-1", 1);
    let other = noted("identity", "user-1", 2);

    publish_all(&bus, &[once.clone(), once.clone(), other.clone(), once.clone()]).await;

    expect_exactly(&mut consumer, &[once, other]).await;
    assert_eq!(consumer.lag().await.unwrap(), 0);
}

async fn a_group_created_after_publishing_gets_every_message_from_the_start(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let sent = noted_run("identity", "user-1", 1..=5);
    publish_all(&bus, &sent).await;

    let mut late = bus.consumer(&spec("late-joiner", "identity")).await.unwrap();

    expect_exactly(&mut late, &sent).await;
}

async fn every_group_gets_every_message(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let mut customers = bus
        .consumer(&spec("customers-on-identity", "identity"))
        .await
        .unwrap();
    let mut notifications = bus
        .consumer(&spec("notifications-on-identity", "identity"))
        .await
        .unwrap();
    let sent: Vec<_> = (1..=10)
        .map(|n| noted("identity", &format!("user-{n}"), 1))
        .collect();

    publish_all(&bus, &sent).await;

    expect_exactly(&mut customers, &sent).await;
    expect_exactly(&mut notifications, &sent).await;
}

async fn a_member_that_was_away_gets_what_it_missed(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let first = noted("identity", "user-1", 1);
    {
        let mut member = bus.consumer(&spec("notifier", "identity")).await.unwrap();
        bus.publish(&first).await.unwrap();
        ack_all(receive(&mut member, 1).await).await;
    }
    let missed = noted_run("identity", "user-1", 2..=4);
    publish_all(&bus, &missed).await;

    let mut back = bus.consumer(&spec("notifier", "identity")).await.unwrap();

    expect_exactly(&mut back, &missed).await;
}

async fn a_waiting_fetch_returns_a_message_published_while_it_waits(backend: BusBackend) {
    let (broker, bus) = TestBroker::connected(backend).await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let sent = noted("identity", "user-1", 1);

    let waiting = tokio::spawn(async move { consumer.fetch(10, PATIENCE).await });
    let waiters = Waiters::of(&bus, &broker, "identity", "notifier").await;
    eventually(PATIENCE, "the fetch to find nothing and wait", || async {
        (waiters.count().await > 0).then_some(())
    })
    .await;
    bus.publish(&sent).await.unwrap();

    let deliveries = waiting.await.expect("fetch task").expect("fetch");
    assert_eq!(ids(&ack_all(deliveries).await), ids(&[sent]));
}

/// What tells a test that a fetch of a group found nothing and waits: the embedded bus's count of
/// its waiting fetches, or the pull requests JetStream holds for the group's consumer.
pub(crate) enum Waiters {
    Embedded(EmbeddedBus),
    Nats(Box<PullConsumer>),
}

impl Waiters {
    pub(crate) async fn of(bus: &Bus, broker: &TestBroker, category: &str, group: &str) -> Self {
        match bus {
            Bus::Embedded(embedded) => Self::Embedded(embedded.clone()),
            Bus::Nats(_) => {
                let client = async_nats::connect(broker.config().url)
                    .await
                    .expect("a second connection to NATS");
                let stream = format!("MERCATO_{}", category.to_ascii_uppercase());
                let consumer = async_nats::jetstream::new(client)
                    .get_consumer_from_stream(group, &stream)
                    .await
                    .expect("the group's consumer");
                Self::Nats(Box::new(consumer))
            }
        }
    }

    pub(crate) async fn count(&self) -> usize {
        match self {
            Self::Embedded(bus) => bus.fetches_waiting(),
            Self::Nats(consumer) => consumer.get_info().await.expect("consumer info").num_waiting,
        }
    }
}

async fn a_message_held_by_one_member_is_not_given_to_another(backend: BusBackend) {
    let broker = TestBroker::start(backend).await;
    let config = patient(broker.config());
    let (bus_a, mut a) = broker.worker(&config).await;
    let (_bus_b, mut b) = broker.worker(&config).await;
    let sent = noted_run("orders", "order-1", 1..=20);
    publish_all(&bus_a, &sent).await;

    let held_by_a = receive(&mut a, 10).await;
    let held_by_b = receive(&mut b, 10).await;

    let a_ids: HashSet<_> = held_by_a.iter().map(|d| d.envelope.id.clone()).collect();
    let b_ids: HashSet<_> = held_by_b.iter().map(|d| d.envelope.id.clone()).collect();
    assert!(
        a_ids.is_disjoint(&b_ids),
        "both members hold {:?}",
        a_ids.intersection(&b_ids)
    );
    let all: HashSet<_> = a_ids.union(&b_ids).cloned().collect();
    assert_eq!(all, ids(&sent).into_iter().collect::<HashSet<_>>());
    assert_nothing_more(&mut b).await;
    ack_all(held_by_a).await;
    ack_all(held_by_b).await;
}

async fn two_members_split_200_messages_with_none_lost_or_held_twice(backend: BusBackend) {
    const MESSAGES: usize = 200;
    let broker = TestBroker::start(backend).await;
    let config = patient(broker.config());
    let publisher = broker.connect_with(&config).await;
    let sent: Vec<_> = (1..=MESSAGES)
        .map(|n| noted("orders", &format!("order-{}", n % 7), i64::try_from(n).unwrap()))
        .collect();

    // Each member has its own connection: on the embedded bus, its own pool on the file, as a
    // second process would. Each holds its first batch unacknowledged until the other member has
    // one too: a member that could take everything while the other waits would then stall here,
    // so sharing is proven rather than left to which task the scheduler runs first.
    let both_hold_a_batch = Arc::new(tokio::sync::Barrier::new(2));
    let mut members = JoinSet::new();
    for name in ["a", "b"] {
        let (_bus, mut consumer) = broker.worker(&config).await;
        let both_hold_a_batch = Arc::clone(&both_hold_a_batch);
        members.spawn(async move {
            let mut got = Vec::new();
            let mut idle = 0;
            let mut first = true;
            // Done once the messages stop coming for a while after the publisher finished.
            while idle < 3 {
                let batch = consumer
                    .fetch(10, Duration::from_millis(500))
                    .await
                    .expect("fetch");
                if batch.is_empty() {
                    // Idle counts only once the member has had work: before that it is waiting to be given any.
                    idle += u32::from(!first);
                    continue;
                }
                idle = 0;
                if std::mem::take(&mut first) {
                    both_hold_a_batch.wait().await;
                }
                for delivery in batch {
                    assert_eq!(delivery.attempt, 1, "member {name} got a redelivery");
                    got.push(delivery.envelope.id.clone());
                    delivery.ack().await.expect("ack");
                }
                tokio::task::yield_now().await;
            }
            (name, got)
        });
    }
    publish_all(&publisher, &sent).await;

    let mut by_member = HashMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let finished = tokio::time::timeout(PATIENCE * 2, async {
        while let Some(joined) = members.join_next().await {
            let (name, got) = joined.expect("member task");
            for id in &got {
                *seen.entry(id.clone()).or_default() += 1;
            }
            by_member.insert(name, got.len());
        }
    })
    .await;
    assert!(finished.is_ok(), "members did not finish in time");

    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "delivered to both members: {doubled:?}");
    let missing: Vec<_> = sent
        .iter()
        .filter(|e| !seen.contains_key(&e.id))
        .map(|e| &e.id)
        .collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert_eq!(seen.len(), MESSAGES);
    assert!(
        by_member.values().all(|n| *n > 0),
        "one member got everything: {by_member:?}"
    );
}

async fn an_unacknowledged_delivery_comes_again_after_the_ack_wait_as_attempt_2(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let sent = noted("identity", "user-1", 1);
    bus.publish(&sent).await.unwrap();

    let first = receive(&mut consumer, 1).await;
    assert_eq!(first[0].attempt, 1);
    drop(first);

    let again = receive(&mut consumer, 1).await;
    assert_eq!(again[0].envelope.id, sent.id);
    assert_eq!(again[0].attempt, 2);
    ack_all(again).await;
    assert_nothing_more(&mut consumer).await;
}

async fn a_nak_delivers_the_message_again_after_the_delay(backend: BusBackend) {
    let broker = TestBroker::start(backend).await;
    let bus = broker.connect_with(&patient(broker.config())).await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let sent = noted("identity", "user-1", 1);
    bus.publish(&sent).await.unwrap();

    let first = receive(&mut consumer, 1).await.remove(0);
    first.nak(Duration::from_secs(2)).await.unwrap();

    let too_soon = consumer.fetch(10, Duration::ZERO).await.unwrap();
    assert!(too_soon.is_empty(), "delivered again before the nak delay");
    // The ack wait is 30 s: a redelivery within the test's patience comes from the nak.
    let again = receive(&mut consumer, 1).await;
    assert_eq!(again[0].envelope.id, sent.id);
    assert_eq!(again[0].attempt, 2);
    ack_all(again).await;
}

async fn a_parked_message_becomes_a_dead_letter_and_replay_returns_it_to_its_group_once(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let poison = noted("identity", "user-1", 1);
    let fine = noted("identity", "user-2", 1);
    publish_all(&bus, &[poison.clone(), fine.clone()]).await;

    let mut first = receive(&mut consumer, 2).await;
    let fine_delivery = first.pop().unwrap();
    assert_eq!(fine_delivery.envelope.id, fine.id);
    fine_delivery.ack().await.unwrap();
    first.pop().unwrap().nak(Duration::ZERO).await.unwrap();
    let second = receive(&mut consumer, 1).await.remove(0);
    assert_eq!(
        (second.envelope.id.as_str(), second.attempt),
        (poison.id.as_str(), 2)
    );
    second.park("template missing:\nwelcome.html").await.unwrap();

    let letters = bus.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.group, "notifier");
    assert_eq!(letter.envelope, poison);
    assert_eq!(letter.error, "template missing:\nwelcome.html");
    assert_eq!(letter.attempts, 2);
    assert!(letter.parked_at > 0);
    assert_nothing_more(&mut consumer).await;

    assert!(bus.replay_dead_letter(&letter.id).await.unwrap());

    assert!(bus.dead_letters(10).await.unwrap().is_empty());
    let replayed = receive(&mut consumer, 1).await;
    assert_eq!(replayed[0].envelope, poison);
    assert_eq!(replayed[0].attempt, 1);
    ack_all(replayed).await;
    assert_nothing_more(&mut consumer).await;
    assert!(
        !bus.replay_dead_letter(&letter.id).await.unwrap(),
        "replayed twice"
    );
    assert!(!bus.replay_dead_letter("not-an-id").await.unwrap());
}

async fn messages_survive_closing_the_bus_and_restarting_the_broker(backend: BusBackend) {
    let mut broker = TestBroker::start(backend).await;
    let sent = noted_run("identity", "user-1", 1..=4);
    let parked = noted("identity", "user-9", 1);
    {
        let bus = broker.connect().await;
        let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
        publish_all(&bus, &sent).await;
        bus.publish(&parked).await.unwrap();
        let mut first = receive(&mut consumer, 2).await;
        // One acknowledged, one still held when the bus goes away.
        first.remove(0).ack().await.unwrap();
        drop(first);
        let mut parker = bus.consumer(&spec("parker", "identity")).await.unwrap();
        let everything = receive(&mut parker, 5).await;
        for delivery in everything {
            if delivery.envelope.id == parked.id {
                delivery.park("kept across restarts").await.unwrap();
            } else {
                delivery.ack().await.unwrap();
            }
        }
    }
    if broker.stop().await {
        broker.restart().await;
    }

    let bus = broker.connect().await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let mut received = ack_all(receive(&mut consumer, 4).await).await;
    received.sort_by_key(|e| e.stream_seq);
    // Everything but the acknowledged first message, and the parked one for the other group.
    let mut expected = sent[1..].to_vec();
    expected.push(parked.clone());
    expected.sort_by_key(|e| e.stream_seq);
    let mut got: Vec<_> = ids(&received);
    got.sort();
    let mut want = ids(&expected);
    want.sort();
    assert_eq!(got, want);
    let letters = bus.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].group.as_str(), &letters[0].envelope),
        ("parker", &parked)
    );
}

async fn ping_fails_while_the_broker_is_down_and_publish_works_again_after_it_returns(backend: BusBackend) {
    let mut broker = TestBroker::start(backend).await;
    let bus = broker.connect().await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    bus.ping().await.unwrap();
    let before = noted("identity", "user-1", 1);
    bus.publish(&before).await.unwrap();

    let stopped = broker.stop().await;
    if stopped {
        let error = bus.ping().await.expect_err("ping while the server is down");
        assert!(matches!(error, BusError::Unavailable(_)), "{error}");
        let error = bus
            .publish(&noted("identity", "user-1", 2))
            .await
            .expect_err("publish while the server is down");
        assert!(error.is_transient(), "{error}");
        let error = mercato_messaging::Bus::connect(&broker.config())
            .await
            .expect_err("connect while the server is down");
        assert!(matches!(error, BusError::Unavailable(_)), "{error}");
        broker.restart().await;
    } else {
        // The embedded bus has no broker to lose: it stays ready.
        assert_eq!(backend, BusBackend::Embedded);
        bus.ping().await.unwrap();
    }

    eventually(PATIENCE, "the bus to answer a ping again", || async {
        bus.ping().await.ok()
    })
    .await;
    let after = noted("identity", "user-1", 3);
    bus.publish(&after).await.expect("publish after the restart");
    let mut received = ack_all(receive(&mut consumer, 2).await).await;
    received.sort_by_key(|e| e.stream_seq);
    assert_eq!(ids(&received), ids(&[before, after]));
}

async fn lag_counts_messages_not_yet_acknowledged(backend: BusBackend) {
    let broker = TestBroker::start(backend).await;
    let bus = broker.connect_with(&patient(broker.config())).await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    assert_eq!(consumer.lag().await.unwrap(), 0);
    let sent = noted_run("identity", "user-1", 1..=5);
    publish_all(&bus, &sent).await;
    assert_eq!(consumer.lag().await.unwrap(), 5);

    let held = receive(&mut consumer, 2).await;
    assert_eq!(
        consumer.lag().await.unwrap(),
        5,
        "held but unacknowledged still counts"
    );
    ack_all(held).await;
    assert_eq!(consumer.lag().await.unwrap(), 3);

    let rest = receive(&mut consumer, 3).await;
    rest.into_iter().next().unwrap().park("gave up").await.unwrap();
    // Two were dropped unacknowledged: still lag; the parked one no longer is.
    assert_eq!(consumer.lag().await.unwrap(), 2);
}

async fn one_consumer_receives_a_streams_messages_in_publish_order(backend: BusBackend) {
    let broker = TestBroker::start(backend).await;
    let bus = broker.connect_with(&patient(broker.config())).await;
    let mut consumer = bus.consumer(&spec("projector", "orders")).await.unwrap();
    let sent = noted_run("orders", "order-1", 1..=50);
    publish_all(&bus, &sent).await;

    let mut received = Vec::new();
    while received.len() < sent.len() {
        let batch = consumer.fetch(7, Duration::from_secs(1)).await.unwrap();
        assert!(batch.iter().all(|d| d.attempt == 1));
        received.extend(ack_all(batch).await);
    }

    let seqs: Vec<_> = received.iter().map(|e| e.stream_seq).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
}

async fn names_no_broker_accepts_are_refused(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;

    let error = bus.consumer(&spec("has.dot", "identity")).await.unwrap_err();
    assert!(matches!(error, BusError::Config(_)), "{error}");
    let error = bus.publish(&noted("bad category", "s", 1)).await.unwrap_err();
    assert!(matches!(error, BusError::Malformed { .. }), "{error}");
    assert!(!error.is_transient());
}

async fn a_group_joined_again_with_other_settings_keeps_its_messages(backend: BusBackend) {
    let (broker, bus) = TestBroker::connected(backend).await;
    let mut before = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let sent = noted_run("identity", "user-1", 1..=3);
    publish_all(&bus, &sent).await;
    ack_all(receive(&mut before, 1).await).await;

    let changed = broker.connect_with(&patient(broker.config())).await;
    let mut after = changed.consumer(&spec("notifier", "identity")).await.unwrap();

    expect_exactly(&mut after, &sent[1..]).await;
}

async fn a_batch_is_published_in_order_and_a_repeat_of_its_ids_is_stored_once(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let sent = noted_run("identity", "user-1", 1..=6);

    bus.publish_batch(&sent[..4]).await.unwrap();
    bus.publish_batch(&sent[2..]).await.unwrap();

    let received = receive(&mut consumer, 6).await;
    let envelopes: Vec<_> = received.iter().map(|d| d.envelope.clone()).collect();
    assert_eq!(ids(&envelopes), ids(&sent));
    // One acknowledgement for the lot; a message it missed would come again within the wait.
    consumer.ack_all(received).await.unwrap();
    assert_nothing_more(&mut consumer).await;
    assert_eq!(consumer.lag().await.unwrap(), 0);
}

async fn a_batch_stops_at_an_envelope_no_broker_accepts_and_keeps_what_came_before(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let mut consumer = bus.consumer(&spec("notifier", "identity")).await.unwrap();
    let sent = [
        noted("identity", "user-1", 1),
        noted("identity", "user-1", 2),
        noted("bad category", "user-1", 3),
        noted("identity", "user-1", 4),
    ];

    let stopped = bus.publish_batch(&sent).await.unwrap_err();

    assert_eq!(stopped.acknowledged, 2);
    assert!(
        matches!(stopped.error, BusError::Malformed { .. }),
        "{}",
        stopped.error
    );
    let received = receive(&mut consumer, 2).await;
    let envelopes: Vec<_> = received.iter().map(|d| d.envelope.clone()).collect();
    assert_eq!(ids(&envelopes), ids(&sent[..2]));
    consumer.ack_all(received).await.unwrap();
    assert_nothing_more(&mut consumer).await;
}

fn seqs_and_types(envelopes: &[mercato_messaging::Envelope]) -> Vec<(i64, String)> {
    envelopes
        .iter()
        .map(|e| (e.stream_seq, e.event_type.clone()))
        .collect()
}

async fn a_group_of_some_types_receives_only_those_in_order(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let mut of_b = bus.consumer(&typed_spec("of-b", "orders", &["B"])).await.unwrap();
    let mut of_a_and_c = bus
        .consumer(&typed_spec("of-a-and-c", "orders", &["A", "C"]))
        .await
        .unwrap();
    let sent: Vec<_> = (1..=9)
        .map(|n| {
            typed(
                "orders",
                "order-1",
                n,
                ["A", "B", "C"][usize::try_from(n - 1).unwrap() % 3],
            )
        })
        .collect();
    bus.publish_batch(&sent).await.unwrap();

    let got = ack_all(receive(&mut of_b, 3).await).await;
    assert_eq!(
        seqs_and_types(&got),
        [(2, "B".into()), (5, "B".into()), (8, "B".into())]
    );
    let got = ack_all(receive(&mut of_a_and_c, 6).await).await;
    let seqs: Vec<i64> = got.iter().map(|e| e.stream_seq).collect();
    assert_eq!(seqs, [1, 3, 4, 6, 7, 9]);
    assert!(got.iter().all(|e| e.event_type != "B"));
    assert_nothing_more(&mut of_b).await;
    assert_nothing_more(&mut of_a_and_c).await;
    assert_eq!(of_b.lag().await.unwrap(), 0);
}

async fn a_group_whose_types_changed_keeps_its_place_and_gets_only_its_new_types(backend: BusBackend) {
    let (_broker, bus) = TestBroker::connected(backend).await;
    let mut before = bus.consumer(&spec("changing", "orders")).await.unwrap();
    publish_all(
        &bus,
        &[typed("orders", "o", 1, "A"), typed("orders", "o", 2, "B")],
    )
    .await;
    ack_all(receive(&mut before, 2).await).await;
    publish_all(
        &bus,
        &[
            typed("orders", "o", 3, "A"),
            typed("orders", "o", 4, "B"),
            typed("orders", "o", 5, "C"),
        ],
    )
    .await;

    let mut after = bus
        .consumer(&typed_spec("changing", "orders", &["B"]))
        .await
        .unwrap();

    let got = ack_all(receive(&mut after, 1).await).await;
    assert_eq!(seqs_and_types(&got), [(4, "B".into())]);
    assert_nothing_more(&mut after).await;
    publish_all(&bus, &[typed("orders", "o", 6, "B")]).await;
    let got = ack_all(receive(&mut after, 1).await).await;
    assert_eq!(seqs_and_types(&got), [(6, "B".into())]);
}

/// Streams are NATS's own: the embedded log has none to lose.
mod streams {
    mod nats {
        use crate::support::{BusBackend, TestBroker, noted};

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_stream_deleted_behind_the_bus_is_made_again_by_the_next_publish() {
            let broker = TestBroker::start(BusBackend::Nats).await;
            let bus = broker.connect().await;
            bus.publish(&noted("orders", "order-1", 1)).await.unwrap();
            let js = async_nats::jetstream::new(
                async_nats::connect(broker.config().url)
                    .await
                    .expect("a second connection"),
            );
            js.delete_stream("MERCATO_ORDERS")
                .await
                .expect("delete the stream");

            bus.publish(&noted("orders", "order-1", 2)).await.unwrap();
            bus.publish_batch(&[noted("orders", "order-1", 3), noted("orders", "order-1", 4)])
                .await
                .unwrap();

            let mut stream = js.get_stream("MERCATO_ORDERS").await.expect("the stream again");
            let stored = stream.info().await.expect("stream info").state.messages;
            assert_eq!(stored, 3, "the messages published after the deletion are stored");
        }
    }
}
