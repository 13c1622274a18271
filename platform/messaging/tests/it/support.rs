//! Helpers shared by the messaging tests: a broker per test and a small event type.

use std::time::Duration;

use mercato_messaging::{Bus, BusConfig, Consumer, ConsumerSpec, Context, Delivery, Envelope};
pub use mercato_testkit::event::Noted;
use mercato_testkit::nats::NatsServer;
use tokio::time::Instant;

/// An upper bound for anything a test waits on, so a hang fails the test instead.
pub use mercato_testkit::PATIENCE;

/// The bus backends a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusBackend {
    Embedded,
    Nats,
}

/// Declares each named `async fn name(backend: BusBackend)` as two tests, `embedded::name` and
/// `nats::name`, so a filter on `nats` selects or leaves out the suite that needs `nats-server`.
macro_rules! bus_tests {
    ($($name:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::BusBackend::Embedded).await;
                }
            )+
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::BusBackend::Nats).await;
                }
            )+
        }
    };
}

/// The broker of one test: a bus file in a temporary directory, or a `nats-server` process with
/// its store in one. Dropping it removes both.
pub struct TestBroker {
    backend: BusBackend,
    nats: Option<NatsServer>,
    dir: tempfile::TempDir,
}

impl TestBroker {
    /// # Panics
    /// When the NATS suite runs and `nats-server` cannot be started: a backend suite fails,
    /// never skips.
    pub async fn start(backend: BusBackend) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let nats = match backend {
            BusBackend::Embedded => None,
            BusBackend::Nats => Some(NatsServer::start(dir.path()).await),
        };
        Self { backend, nats, dir }
    }

    /// Settings for this broker, with an ack wait short enough to watch redeliveries.
    pub fn config(&self) -> BusConfig {
        let url = match &self.nats {
            Some(server) => server.url(),
            None => format!("sqlite://{}?mode=rwc", self.dir.path().join("bus.db").display()),
        };
        BusConfig {
            url,
            ack_wait_ms: 300,
            replicas: 1,
            duplicate_window_secs: 120,
            publish_timeout_ms: 2_000,
            ..BusConfig::default()
        }
    }

    /// A broker for this test and a connection to it.
    pub async fn connected(backend: BusBackend) -> (Self, Bus) {
        let broker = Self::start(backend).await;
        let bus = broker.connect().await;
        (broker, bus)
    }

    /// A new connection (a new pool on the file, or a new NATS client).
    pub async fn connect(&self) -> Bus {
        self.connect_with(&self.config()).await
    }

    pub async fn connect_with(&self, config: &BusConfig) -> Bus {
        Bus::connect(config)
            .await
            .unwrap_or_else(|e| panic!("connect to the {:?} bus at {}: {e}", self.backend, config.url))
    }

    /// A member of the `workers` group on `orders` with a connection of its own, as another
    /// process would have: the connection, kept for as long as the member, and the member.
    pub async fn worker(&self, config: &BusConfig) -> (Bus, Consumer) {
        let bus = self.connect_with(config).await;
        let member = bus.consumer(&spec("workers", "orders")).await.unwrap();
        (bus, member)
    }

    /// Stops the NATS server as an operator would (SIGTERM, then wait for it to exit). The
    /// embedded bus lives in the process, so there is nothing to stop and this returns false.
    pub async fn stop(&mut self) -> bool {
        match &mut self.nats {
            Some(server) => {
                server.stop().await;
                true
            }
            None => false,
        }
    }

    /// Starts the NATS server again on the same port and store.
    pub async fn restart(&mut self) {
        if let Some(server) = &mut self.nats {
            server.restart().await;
        }
    }
}

/// Event `n` of stream `stream_id`, published by `category`.
pub fn noted(category: &str, stream_id: &str, n: i64) -> Envelope {
    let mut envelope =
        Envelope::new(category, stream_id, &Noted { n }, &Context::default()).expect("envelope");
    envelope.stream_seq = n;
    envelope
}

/// Events `ns` of stream `stream_id`, in order.
pub fn noted_run(category: &str, stream_id: &str, ns: std::ops::RangeInclusive<i64>) -> Vec<Envelope> {
    ns.map(|n| noted(category, stream_id, n)).collect()
}

/// Event `n` of stream `stream_id` as an event of type `event_type`.
pub fn typed(category: &str, stream_id: &str, n: i64, event_type: &str) -> Envelope {
    Envelope {
        event_type: event_type.to_owned(),
        ..noted(category, stream_id, n)
    }
}

/// A group that takes only `event_types`.
pub fn typed_spec(group: &str, category: &str, event_types: &[&str]) -> ConsumerSpec {
    ConsumerSpec {
        event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        ..spec(group, category)
    }
}

pub fn spec(group: &str, category: &str) -> ConsumerSpec {
    ConsumerSpec {
        group: group.to_owned(),
        category: category.to_owned(),
        event_types: Vec::new(),
    }
}

pub async fn publish_all(bus: &Bus, envelopes: &[Envelope]) {
    for envelope in envelopes {
        bus.publish(envelope)
            .await
            .unwrap_or_else(|e| panic!("publish {}: {e}", envelope.id));
    }
}

/// Fetches until `count` deliveries arrived, failing the test after [`PATIENCE`].
pub async fn receive(consumer: &mut Consumer, count: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        assert!(
            Instant::now() < deadline,
            "received {} of {count} messages within {PATIENCE:?}",
            received.len()
        );
        let batch = consumer
            .fetch(count - received.len(), Duration::from_secs(1))
            .await
            .expect("fetch");
        received.extend(batch);
    }
    received
}

/// Acknowledges every delivery, returning their envelopes.
pub async fn ack_all(deliveries: Vec<Delivery>) -> Vec<Envelope> {
    let mut envelopes = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        envelopes.push(delivery.envelope.clone());
        delivery.ack().await.expect("ack");
    }
    envelopes
}

/// Asserts that nothing is delivered during a wait longer than the test ack wait, so a message
/// left unacknowledged, or acked and redelivered anyway, would show.
pub async fn assert_nothing_more(consumer: &mut Consumer) {
    let extra = consumer
        .fetch(10, Duration::from_millis(900))
        .await
        .expect("fetch");
    let ids: Vec<_> = extra.iter().map(|d| (d.envelope.id.clone(), d.attempt)).collect();
    assert!(ids.is_empty(), "expected no more deliveries, got {ids:?}");
}

/// Receives and acknowledges as many messages as `sent`, checks that they are `sent` in order,
/// and that nothing more comes.
pub async fn expect_exactly(consumer: &mut Consumer, sent: &[Envelope]) {
    let received = ack_all(receive(consumer, sent.len()).await).await;
    assert_eq!(ids(&received), ids(sent));
    assert_nothing_more(consumer).await;
}

pub fn ids(envelopes: &[Envelope]) -> Vec<String> {
    envelopes.iter().map(|e| e.id.clone()).collect()
}
