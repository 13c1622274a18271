//! Broadcast subscriptions on NATS: core subscriptions that report a connection gap.

use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::{NatsBus, unavailable};
use crate::bus::{Broadcast, BusError};
use crate::envelope::Envelope;

impl NatsBus {
    /// A core subscription to the category's subjects.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the server is not connected.
    pub async fn subscribe(&self, category: &str) -> Result<NatsSubscription, BusError> {
        self.connected()?;
        let subject = format!("mercato.{category}.>");
        let epoch = self.inner.epoch.subscribe();
        let subscriber = self
            .inner
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| unavailable(format!("subscribe to {subject}"), e))?;
        Ok(NatsSubscription {
            bus: self.clone(),
            subject,
            subscriber: Some(subscriber),
            epoch,
        })
    }
}

/// A core subscription; the client renews it on the server after a reconnect.
pub struct NatsSubscription {
    bus: NatsBus,
    subject: String,
    /// `None` after the client ended it; the next call subscribes again.
    subscriber: Option<async_nats::Subscriber>,
    epoch: watch::Receiver<u64>,
}

impl std::fmt::Debug for NatsSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSubscription")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl NatsSubscription {
    /// The next event, or a gap when the connection epoch moved since the last call.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when a subscription the client ended cannot be renewed yet.
    pub async fn next(&mut self) -> Result<Broadcast, BusError> {
        loop {
            let Some(subscriber) = self.subscriber.as_mut() else {
                self.bus.connected()?;
                let renewed = self
                    .bus
                    .inner
                    .client
                    .subscribe(self.subject.clone())
                    .await
                    .map_err(|e| unavailable(format!("subscribe to {}", self.subject), e))?;
                self.subscriber = Some(renewed);
                return Ok(Broadcast::Gap);
            };
            tokio::select! {
                biased;
                changed = self.epoch.changed() => {
                    // The sender lives as long as the bus this subscription holds.
                    if changed.is_ok() {
                        self.epoch.borrow_and_update();
                        return Ok(Broadcast::Gap);
                    }
                }
                message = subscriber.next() => match message {
                    Some(message) => match serde_json::from_slice::<Envelope>(&message.payload) {
                        Ok(envelope) => return Ok(Broadcast::Event(envelope)),
                        Err(error) => {
                            tracing::error!(%error, subject = %message.subject, "a subscription skips a message that is not an envelope");
                        }
                    },
                    None => self.subscriber = None,
                },
            }
        }
    }
}
