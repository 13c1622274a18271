//! The event bus: one interface, two backends.
//!
//! - [`embedded`]: a durable log and consumer groups in a SQLite file (`bus.db` in the data
//!   directory). Nothing to install; survives restarts; a group that was away gets what it missed.
//! - [`nats`]: NATS JetStream. A stream per category (`MERCATO_<CATEGORY>`, subjects
//!   `mercato.<category>.>`), a durable pull consumer per group, explicit acks, publisher dedup
//!   by event id (`Nats-Msg-Id`).
//!
//! Both give at-least-once delivery to each consumer group; instances of one group share its
//! messages. Redelivery order is not guaranteed: the inbox restores per-stream order. A delivery
//! stays with its member while the member holds it (renewed by the connection's keeper, see
//! `in_hand`); one dropped unsettled, or held by a process that died, comes again after the ack
//! wait. A message a
//! handler keeps failing is parked in the dead-letter store with its error ([`Delivery::park`]);
//! `mercato dlq list|replay` shows and replays it.
//!
//! A [`Subscription`] is the other way to read: a broadcast to every subscriber of what is
//! published after it subscribed, not durable and never acknowledged (for caches that only need
//! to hear about changes). A subscriber that may have missed something is told with
//! [`Broadcast::Gap`].

pub mod embedded;
mod in_hand;
pub mod nats;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;

/// Bus settings (`[bus]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `sqlite://{data_dir}/bus.db?mode=rwc` (embedded) or `nats://host:4222`.
    pub url: String,
    /// A delivery not acknowledged within this time is delivered again. Deliveries a live
    /// process holds are renewed a few times per ack wait, so it only bounds how long the work of
    /// a process that died waits (on the embedded bus a dead run's lease, a few seconds, ends it
    /// sooner).
    pub ack_wait_ms: u64,
    /// JetStream stream replicas (3 in production; 1 on a single server).
    pub replicas: usize,
    /// JetStream publisher dedup window.
    pub duplicate_window_secs: u64,
    /// How long one publish may take before it counts as failed.
    pub publish_timeout_ms: u64,
    /// The embedded bus file's `synchronous` (see `database.sqlite_synchronous`).
    pub sqlite_synchronous: mercato_storage::SqliteSync,
    /// The embedded log's replay window: a message every group has passed is kept this long
    /// after it was published, then trimmed (a message a group has not passed, holds or parked
    /// stays whatever its age). On NATS the streams' own limits apply.
    pub retention_secs: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://{data_dir}/bus.db?mode=rwc".into(),
            ack_wait_ms: 5_000,
            replicas: 1,
            duplicate_window_secs: 120,
            publish_timeout_ms: 5_000,
            sqlite_synchronous: mercato_storage::SqliteSync::Full,
            retention_secs: 3_600,
        }
    }
}

impl BusConfig {
    #[must_use]
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }

    /// Which backend the URL names.
    #[must_use]
    pub fn is_nats(&self) -> bool {
        self.url.starts_with("nats://")
    }
}

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker (or the bus file) cannot be reached right now; retry later.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("invalid bus configuration: {0}")]
    Config(String),
    #[error("malformed message {id}: {reason}")]
    Malformed { id: String, reason: String },
    #[error("bus storage: {0}")]
    Storage(#[from] mercato_storage::StorageError),
}

impl BusError {
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Storage(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// A batch publish that stopped: the first `acknowledged` envelopes are stored, the next failed.
#[derive(Debug, thiserror::Error)]
#[error("{acknowledged} of the batch published, then: {error}")]
pub struct PartialPublish {
    pub acknowledged: usize,
    #[source]
    pub error: BusError,
}

/// A durable consumer group reading one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The group's durable name, e.g. `customers-on-identity`: `[A-Za-z0-9_-]`, at most 64.
    pub group: String,
    /// The category (publishing service) to read, e.g. `identity`.
    pub category: String,
    /// The event types the group handles; empty for all. Other types are never delivered to it
    /// (its position still moves past them). A message the group held before its types changed
    /// may still come once.
    pub event_types: Vec<String>,
}

impl ConsumerSpec {
    /// # Errors
    /// [`BusError::Config`] for names the brokers would refuse.
    pub fn validate(&self) -> Result<(), BusError> {
        if !name_ok(&self.group) || !name_ok(&self.category) {
            return Err(BusError::Config(format!(
                "consumer group {:?} and category {:?} must be 1-64 of [A-Za-z0-9_-]",
                self.group, self.category
            )));
        }
        if self.event_types.iter().any(String::is_empty) {
            return Err(BusError::Config(format!(
                "consumer group {:?} names an empty event type",
                self.group
            )));
        }
        Ok(())
    }

    /// Whether the group takes events of `event_type`.
    #[must_use]
    pub fn handles(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// Group and category names: what both brokers accept.
fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A category both brokers can carry: a NATS subject token, and not the dead letters' own.
fn category_ok(category: &str) -> bool {
    name_ok(category) && category != "dlq"
}

const CATEGORY_RULE: &str = "must be 1-64 of [A-Za-z0-9_-] and not \"dlq\"";

fn check_category_name(category: &str) -> Result<(), BusError> {
    if category_ok(category) {
        Ok(())
    } else {
        Err(BusError::Config(format!("category {category:?} {CATEGORY_RULE}")))
    }
}

/// The same rule for an envelope's category, so an event one backend takes the other takes too.
fn check_envelope_category(envelope: &Envelope) -> Result<(), BusError> {
    let category = envelope.category();
    if category_ok(category) {
        Ok(())
    } else {
        Err(BusError::Malformed {
            id: envelope.id.clone(),
            reason: format!("category {category:?} {CATEGORY_RULE}"),
        })
    }
}

/// Longest error text kept with a dead letter: the store is bounded, a stack of causes is not.
const MAX_ERROR_BYTES: usize = 4096;

/// `error` cut to what a dead letter keeps, on a character boundary.
fn parked_error(error: &str) -> &str {
    if error.len() <= MAX_ERROR_BYTES {
        return error;
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

/// A message parked after its handler kept failing.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The dead-letter entry's own id, for `replay`.
    pub id: String,
    pub group: String,
    pub envelope: Envelope,
    pub error: String,
    pub attempts: u32,
    /// Unix milliseconds.
    pub parked_at: i64,
}

/// A bus connection.
#[derive(Debug, Clone)]
pub enum Bus {
    Embedded(embedded::EmbeddedBus),
    Nats(nats::NatsBus),
}

impl Bus {
    /// Connects to the backend the URL names (and creates what it needs: tables or streams).
    ///
    /// # Errors
    /// [`BusError::Config`] for a bad URL, [`BusError::Unavailable`] when unreachable.
    pub async fn connect(config: &BusConfig) -> Result<Self, BusError> {
        if config.is_nats() {
            Ok(Self::Nats(nats::NatsBus::connect(config).await?))
        } else if config.url.starts_with("sqlite:") {
            Ok(Self::Embedded(embedded::EmbeddedBus::open(config).await?))
        } else {
            Err(BusError::Config(format!(
                "bus url {:?} must start with sqlite: or nats://",
                config.url
            )))
        }
    }

    /// The embedded bus's own database (its log, cursors and claims); none on NATS.
    #[must_use]
    pub fn database(&self) -> Option<&mercato_storage::Db> {
        match self {
            Self::Embedded(bus) => Some(&bus.db),
            Self::Nats(_) => None,
        }
    }

    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Nats(_) => "nats",
        }
    }

    /// Publishes an envelope to its category. Publishing the same envelope id twice stores it
    /// once (within the dedup window on NATS; always on the embedded bus).
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the broker did not acknowledge the message.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        match self {
            Self::Embedded(b) => b.publish(envelope).await,
            Self::Nats(b) => b.publish(envelope).await,
        }
    }

    /// Publishes `envelopes` in order as one batch: on NATS every publish is sent before any
    /// acknowledgement is awaited, on the embedded bus they are stored in one transaction. Dedup by
    /// event id holds as for [`Bus::publish`].
    ///
    /// # Errors
    /// [`PartialPublish`] with how many envelopes, from the first, the broker acknowledged; the
    /// rest may or may not be stored, so they must be published again.
    pub async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), PartialPublish> {
        if envelopes.is_empty() {
            return Ok(());
        }
        match self {
            Self::Embedded(b) => b.publish_batch(envelopes).await,
            Self::Nats(b) => b.publish_batch(envelopes).await,
        }
    }

    /// Joins (creating if needed) the durable consumer group `spec`.
    ///
    /// # Errors
    /// Invalid names, or the broker is unreachable.
    pub async fn consumer(&self, spec: &ConsumerSpec) -> Result<Consumer, BusError> {
        spec.validate()?;
        match self {
            Self::Embedded(b) => Ok(Consumer::Embedded(b.consumer(spec).await?)),
            Self::Nats(b) => Ok(Consumer::Nats(b.consumer(spec).await?)),
        }
    }

    /// Subscribes to every event of `category` published from now on. Unlike a consumer group,
    /// every subscription gets every event; nothing is stored for it or acknowledged.
    ///
    /// # Errors
    /// An invalid category, or the broker is unreachable.
    pub async fn subscribe(&self, category: &str) -> Result<Subscription, BusError> {
        check_category_name(category)?;
        match self {
            Self::Embedded(b) => Ok(Subscription::Embedded(b.subscribe(category).await?)),
            Self::Nats(b) => Ok(Subscription::Nats(b.subscribe(category).await?)),
        }
    }

    /// A cheap round trip, for readiness.
    ///
    /// # Errors
    /// The broker is unreachable.
    pub async fn ping(&self) -> Result<(), BusError> {
        match self {
            Self::Embedded(b) => b.ping().await,
            Self::Nats(b) => b.ping().await,
        }
    }

    /// The oldest parked messages first, at most `limit`.
    ///
    /// # Errors
    /// The broker is unreachable.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        match self {
            Self::Embedded(b) => b.dead_letters(limit).await,
            Self::Nats(b) => b.dead_letters(limit).await,
        }
    }

    /// Delivers a parked message to its group again and removes it from the dead letters.
    /// `Ok(false)` when no dead letter has this id.
    ///
    /// # Errors
    /// The broker is unreachable.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        match self {
            Self::Embedded(b) => b.replay_dead_letter(id).await,
            Self::Nats(b) => b.replay_dead_letter(id).await,
        }
    }
}

/// A member of a consumer group.
#[derive(Debug)]
pub enum Consumer {
    Embedded(embedded::EmbeddedConsumer),
    Nats(nats::NatsConsumer),
}

impl Consumer {
    /// Up to `max` deliveries, waiting at most `wait` for the first one. Each must be acked,
    /// nacked or parked; one dropped unsettled is delivered again after the ack wait.
    ///
    /// # Errors
    /// The broker is unreachable.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        match self {
            Self::Embedded(c) => c.fetch(max, wait).await,
            Self::Nats(c) => c.fetch(max, wait).await,
        }
    }

    /// Acknowledges deliveries this member fetched, all at once: one statement on the embedded
    /// bus, concurrent confirmed acks on NATS.
    ///
    /// # Errors
    /// The acknowledgements did not all reach the broker; those that did not come again.
    pub async fn ack_all(&self, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        match self {
            Self::Embedded(c) => c.ack_all(deliveries).await,
            Self::Nats(_) => ack_each(deliveries).await,
        }
    }

    /// A handle that acknowledges this member's deliveries from another task, while this one
    /// goes on fetching.
    #[must_use]
    pub fn acker(&self) -> Acker {
        match self {
            Self::Embedded(c) => Acker::Embedded(c.clone()),
            Self::Nats(_) => Acker::Nats,
        }
    }

    /// Messages of the category this group has not yet acknowledged (for the lag gauge).
    ///
    /// # Errors
    /// The broker is unreachable.
    pub async fn lag(&self) -> Result<u64, BusError> {
        match self {
            Self::Embedded(c) => c.lag().await,
            Self::Nats(c) => c.lag().await,
        }
    }
}

/// Acknowledges a member's deliveries as [`Consumer::ack_all`] does, from any task.
#[derive(Debug, Clone)]
pub enum Acker {
    Embedded(embedded::EmbeddedConsumer),
    Nats,
}

impl Acker {
    /// # Errors
    /// See [`Consumer::ack_all`].
    pub async fn ack_all(&self, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        match self {
            Self::Embedded(c) => c.ack_all(deliveries).await,
            Self::Nats => ack_each(deliveries).await,
        }
    }
}

/// One delivery of one message to one group member.
#[derive(Debug)]
pub struct Delivery {
    pub envelope: Envelope,
    /// 1 on the first delivery, counting up on each redelivery.
    pub attempt: u32,
    pub(crate) handle: DeliveryHandle,
}

#[derive(Debug)]
pub(crate) enum DeliveryHandle {
    Embedded(embedded::EmbeddedHandle),
    Nats(nats::NatsHandle),
}

impl Delivery {
    /// Done: never deliver it to this group again.
    ///
    /// # Errors
    /// The acknowledgement did not reach the broker; the message will come again.
    pub async fn ack(self) -> Result<(), BusError> {
        match self.handle {
            DeliveryHandle::Embedded(h) => h.ack().await,
            DeliveryHandle::Nats(h) => h.ack().await,
        }
    }

    /// Not now: deliver it again after `delay`.
    ///
    /// # Errors
    /// The broker is unreachable; the message comes again after the ack wait anyway.
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        match self.handle {
            DeliveryHandle::Embedded(h) => h.nak(delay).await,
            DeliveryHandle::Nats(h) => h.nak(delay).await,
        }
    }

    /// Never again for this group: store it as a dead letter with `error`, then ack it.
    ///
    /// # Errors
    /// The broker is unreachable; the message comes again after the ack wait.
    pub async fn park(self, error: &str) -> Result<(), BusError> {
        let attempts = self.attempt;
        match self.handle {
            DeliveryHandle::Embedded(h) => h.park(&self.envelope, attempts, error).await,
            DeliveryHandle::Nats(h) => h.park(&self.envelope, attempts, error).await,
        }
    }
}

/// Acknowledges each delivery on its own, all at once rather than one after another.
async fn ack_each(deliveries: Vec<Delivery>) -> Result<(), BusError> {
    let acks = futures_util::future::join_all(deliveries.into_iter().map(Delivery::ack)).await;
    acks.into_iter().collect()
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq)]
// Nearly every item is an event; boxing it would cost an allocation each to shrink the rare gap.
#[allow(clippy::large_enum_variant)]
pub enum Broadcast {
    /// An event of the category, published after the subscription started.
    Event(Envelope),
    /// Events may have been missed (the connection to the broker was lost, or this subscriber
    /// fell too far behind): whatever the subscriber derived from earlier events may be out of
    /// date.
    Gap,
}

/// A broadcast subscription to one category: every subscriber gets every event published after
/// it subscribed. Not durable: events published while nobody listens are not kept for it.
#[derive(Debug)]
pub enum Subscription {
    Embedded(embedded::EmbeddedSubscription),
    Nats(nats::NatsSubscription),
}

impl Subscription {
    /// The next event, or a [`Broadcast::Gap`]; waits as long as it takes. Cancel-safe: dropping
    /// the future loses nothing. After an error the subscription is still usable: call again
    /// (after a pause) and it carries on where it was.
    ///
    /// # Errors
    /// The broker cannot be reached right now.
    pub async fn next(&mut self) -> Result<Broadcast, BusError> {
        match self {
            Self::Embedded(s) => s.next().await.map(Broadcast::Event),
            Self::Nats(s) => s.next().await,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(parked_error("abc"), "abc");
        let exact = "a".repeat(MAX_ERROR_BYTES);
        assert_eq!(parked_error(&exact), exact);
        let straddling = format!("{}é", "a".repeat(MAX_ERROR_BYTES - 1));
        assert_eq!(parked_error(&straddling), "a".repeat(MAX_ERROR_BYTES - 1));
        let after = format!("{}éb", "a".repeat(MAX_ERROR_BYTES - 2));
        assert_eq!(
            parked_error(&after),
            format!("{}é", "a".repeat(MAX_ERROR_BYTES - 2))
        );
    }

    /// Event 1 of stream `s`, published by identity, with `payload`.
    pub(crate) fn envelope(payload: serde_json::Value) -> Envelope {
        Envelope {
            id: "e-1".into(),
            event_type: "T".into(),
            schema_version: 1,
            source: "identity".into(),
            stream_id: "s".into(),
            stream_seq: 1,
            occurred_at: 0,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            preceding: std::collections::BTreeMap::new(),
            payload,
        }
    }

    #[test]
    fn categories_that_are_not_subject_tokens_are_refused() {
        let mut envelope = envelope(serde_json::json!({}));
        assert!(check_envelope_category(&envelope).is_ok());
        for bad in ["", "a.b", "a*", "dlq", "has space"] {
            envelope.source = bad.into();
            assert!(check_envelope_category(&envelope).is_err(), "{bad:?} accepted");
            assert!(check_category_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
