//! What a service published, read from the bus as one more consumer group would: every event
//! is acknowledged and kept, a redelivery is not counted twice.

use std::time::Duration;

use mercato_messaging::{Bus, Consumer, ConsumerSpec, Envelope, Event};

use crate::PATIENCE;

/// The events of one category, as they arrive.
pub struct Listener {
    consumer: Consumer,
    pub seen: Vec<Envelope>,
}

impl Listener {
    /// Joins `category` as consumer group `group` (a group of the test's own).
    ///
    /// # Panics
    /// When the bus refuses the group.
    pub async fn join(bus: &Bus, group: &str, category: &str) -> Self {
        let spec = ConsumerSpec {
            group: group.into(),
            category: category.into(),
            event_types: Vec::new(),
        };
        Self {
            consumer: bus.consumer(&spec).await.expect("join a consumer group"),
            seen: Vec::new(),
        }
    }

    /// Reads until an event matches `wanted`, and returns it.
    ///
    /// # Panics
    /// When none arrives within [`PATIENCE`].
    pub async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Envelope) -> bool) -> Envelope {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self.seen.iter().find(|e| wanted(e)) {
                return found.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; saw {:?}",
                self.seen
                    .iter()
                    .map(|e| (&e.event_type, &e.stream_id))
                    .collect::<Vec<_>>()
            );
            self.read(Duration::from_millis(500)).await;
        }
    }

    /// The first event of type `E` on `stream`, decoded.
    ///
    /// # Panics
    /// When none arrives within [`PATIENCE`], or it does not decode.
    pub async fn first<E: Event>(&mut self, stream: &str) -> (Envelope, E) {
        let envelope = self
            .wait_for(&format!("{} on {stream}", E::TYPE), |e| {
                e.stream_id == stream && e.is::<E>()
            })
            .await;
        let event = envelope.decode().expect("the payload decodes");
        (envelope, event)
    }

    /// Reads one batch, waiting at most `wait` for it.
    ///
    /// # Panics
    /// When the bus fails.
    pub async fn read(&mut self, wait: Duration) {
        let batch = self.consumer.fetch(64, wait).await.expect("fetch events");
        for delivery in batch {
            // The bus delivers at least once; a redelivery is not a new event.
            if !self.seen.iter().any(|e| e.id == delivery.envelope.id) {
                self.seen.push(delivery.envelope.clone());
            }
            delivery.ack().await.expect("ack an event");
        }
    }
}
