//! The NATS JetStream bus.
//!
//! - A stream per category, `MERCATO_<CATEGORY>` with subjects `mercato.<category>.>`, file storage,
//!   created on first use; events go to `mercato.<category>.<event type>` with `Nats-Msg-Id` set to
//!   the event id, so the server drops a republish inside the duplicate window.
//! - A durable pull consumer per group, explicit acks, unlimited deliveries: the caller decides
//!   when a message is parked.
//! - Parked messages go to the `MERCATO_DLQ` stream (`mercato.dlq.<group>`) as a JSON record
//!   (group, error, attempts, envelope); a dead letter's id is its sequence there.
//!
//! - A subscription is a core NATS subscription on `mercato.<category>.>`: it sees what is
//!   published while it is connected. Every disconnect, reconnect or dropped message (a slow
//!   subscriber) moves a connection epoch, and each subscription reports the move as a gap.
//!
//! The client reconnects by itself after the server restarts. While it is not connected, every
//! call fails fast with [`BusError::Unavailable`] instead of queueing behind the reconnect.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{
    CreateStreamErrorKind, PublishAckFuture, PublishError, PublishErrorKind,
};
use async_nats::jetstream::stream::{self, RawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Broadcast, BusConfig, BusError, ConsumerSpec, DeadLetter, Delivery, DeliveryHandle};
use crate::envelope::Envelope;

const DLQ_STREAM: &str = "MERCATO_DLQ";
const DLQ_SUBJECTS: &str = "mercato.dlq.>";

/// The shortest pull: a fetch that does not want to wait still lets the server expire it.
const MIN_PULL_EXPIRY: Duration = Duration::from_millis(10);

/// Longest error text kept with a dead letter: the store is bounded, a stack of causes is not.
const MAX_ERROR_BYTES: usize = 4096;

/// A connection to NATS, shared by every clone.
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    config: BusConfig,
    /// Streams known to exist, so a publish costs one round trip, not two.
    streams: Mutex<HashSet<String>>,
    /// Moves on every event after which a core subscription may have missed messages.
    epoch: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("url", &mercato_storage::db::redact_url(&self.inner.config.url))
            .field("state", &self.inner.client.connection_state())
            .finish_non_exhaustive()
    }
}

/// What the dead-letter stream stores for one parked message.
#[derive(Debug, Serialize, Deserialize)]
struct ParkedRecord {
    group: String,
    error: String,
    attempts: u32,
    parked_at: i64,
    envelope: Envelope,
}

impl NatsBus {
    /// Connects to the server the URL names. Streams and consumers are created on first use.
    ///
    /// # Errors
    /// [`BusError::Config`] for settings NATS cannot use; [`BusError::Unavailable`] when the server
    /// cannot be reached.
    pub async fn connect(config: &BusConfig) -> Result<Self, BusError> {
        validate(config)?;
        let timeout = Duration::from_millis(config.publish_timeout_ms);
        let epoch = Arc::new(watch::Sender::new(0_u64));
        let on_event = Arc::clone(&epoch);
        // The first `Connected` is the initial connection, reported after `connect` returns: it
        // must not look like a reconnect to a subscription made in between. Only a `Connected`
        // after a `Disconnected` is one.
        let was_disconnected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let epoch = Arc::clone(&on_event);
                let was_disconnected = Arc::clone(&was_disconnected);
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let moved = match event {
                        async_nats::Event::Disconnected => {
                            was_disconnected.store(true, SeqCst);
                            true
                        }
                        async_nats::Event::Connected => was_disconnected.swap(false, SeqCst),
                        async_nats::Event::SlowConsumer(_) => true,
                        _ => false,
                    };
                    if moved {
                        epoch.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
            })
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .max_reconnects(None)
            .connect(config.url.as_str())
            .await
            .map_err(|e| {
                BusError::Unavailable(format!(
                    "cannot connect to {}: {e}",
                    mercato_storage::db::redact_url(&config.url)
                ))
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .ack_timeout(timeout)
            .build(client.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                js,
                config: config.clone(),
                streams: Mutex::new(HashSet::new()),
                epoch,
            }),
        })
    }

    /// Publishes `envelope` and waits for the stream to store it.
    ///
    /// # Errors
    /// [`BusError::Malformed`] for an envelope no subject can carry; [`BusError::Unavailable`] when
    /// the server did not acknowledge it within `publish_timeout_ms`.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        check_envelope(envelope)?;
        let category = envelope.category();
        let subject = format!("mercato.{category}.{}", subject_token(&envelope.event_type));
        let payload = Bytes::from(serde_json::to_vec(envelope).map_err(|e| BusError::Malformed {
            id: envelope.id.clone(),
            reason: e.to_string(),
        })?);
        self.publish_to_category(category, subject, &envelope.id, payload)
            .await
    }

    /// Creates (or binds to) the durable consumer named after the group.
    ///
    /// # Errors
    /// Invalid names; [`BusError::Unavailable`] when the server cannot be reached.
    pub async fn consumer(&self, spec: &ConsumerSpec) -> Result<NatsConsumer, BusError> {
        spec.validate()?;
        if spec.category == "dlq" {
            return Err(BusError::Config(
                "category \"dlq\" is reserved for dead letters".into(),
            ));
        }
        self.connected()?;
        let stream = self.ensure_category_stream(&spec.category).await?;
        let config = pull::Config {
            durable_name: Some(spec.group.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.inner.config.ack_wait(),
            max_deliver: -1,
            deliver_policy: DeliverPolicy::All,
            ..pull::Config::default()
        };
        let consumer: PullConsumer = match self.inner.js.create_consumer_on_stream(config, &stream).await {
            Ok(consumer) => consumer,
            Err(create) => {
                // A server that does not update a durable in place refuses a changed config;
                // the existing consumer still serves the group.
                let existing = self
                    .inner
                    .js
                    .get_consumer_from_stream(&spec.group, &stream)
                    .await
                    .map_err(|_| unavailable(format!("consumer {} on {stream}", spec.group), create))?;
                tracing::warn!(group = %spec.group, stream, "kept the existing consumer configuration");
                existing
            }
        };
        Ok(NatsConsumer {
            bus: self.clone(),
            consumer: Box::new(consumer),
            group: spec.group.clone(),
        })
    }

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

    /// A JetStream round trip, bounded by `publish_timeout_ms`.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the server is not connected or does not answer.
    pub async fn ping(&self) -> Result<(), BusError> {
        self.connected()?;
        // A raw `$JS.API.INFO`: the typed account info of this client wants fields 2.9 lacks.
        let info = self.inner.js.request::<_, _, serde_json::Value>("INFO", &());
        match tokio::time::timeout(self.timeout(), info).await {
            Ok(Ok(reply)) => match reply.get("error") {
                None => Ok(()),
                Some(error) => Err(unavailable("JetStream account info", error)),
            },
            Ok(Err(e)) => Err(unavailable("JetStream account info", e)),
            Err(_) => Err(BusError::Unavailable(
                "JetStream did not answer a ping in time".into(),
            )),
        }
    }

    /// The oldest dead letters first, at most `limit`.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the server cannot be reached.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.connected()?;
        let stream = self.dlq_stream().await?;
        let mut letters = Vec::new();
        let mut next = 1;
        while letters.len() < limit {
            let message = match stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(DLQ_SUBJECTS)
                .send()
                .await
            {
                Ok(message) => message,
                Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => break,
                Err(e) => return Err(unavailable("read dead letters", e)),
            };
            next = message.sequence.saturating_add(1);
            match serde_json::from_slice::<ParkedRecord>(&message.payload) {
                Ok(record) => letters.push(DeadLetter {
                    id: message.sequence.to_string(),
                    group: record.group,
                    envelope: record.envelope,
                    error: record.error,
                    attempts: record.attempts,
                    parked_at: record.parked_at,
                }),
                // Only something other than this bus writes records that do not parse.
                Err(error) => {
                    tracing::warn!(%error, seq = message.sequence, "skipping an unreadable dead letter");
                }
            }
        }
        Ok(letters)
    }

    /// Publishes the parked envelope to its category again, under a new message id so the
    /// duplicate window does not swallow it, then deletes the dead letter. Other groups of the
    /// category see the copy too; their inbox has the event id as handled and skips it.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the server cannot be reached; [`BusError::Malformed`] for a
    /// record this bus did not write.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(false);
        };
        self.connected()?;
        let stream = self.dlq_stream().await?;
        let message = match stream.get_raw_message(seq).await {
            Ok(message) => message,
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => return Ok(false),
            Err(e) => return Err(unavailable("read the dead letter", e)),
        };
        let record: ParkedRecord =
            serde_json::from_slice(&message.payload).map_err(|e| BusError::Malformed {
                id: format!("dead letter {seq}"),
                reason: e.to_string(),
            })?;
        let envelope = record.envelope;
        check_envelope(&envelope)?;
        let category = envelope.category();
        let subject = format!("mercato.{category}.{}", subject_token(&envelope.event_type));
        let payload = Bytes::from(serde_json::to_vec(&envelope).map_err(|e| BusError::Malformed {
            id: envelope.id.clone(),
            reason: e.to_string(),
        })?);
        let msg_id = format!("{}:replay:{seq}", envelope.id);
        self.publish_to_category(category, subject, &msg_id, payload)
            .await?;
        match tokio::time::timeout(self.timeout(), stream.delete_message(seq)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(unavailable("delete the replayed dead letter", e)),
            Err(_) => Err(BusError::Unavailable(
                "deleting the replayed dead letter timed out".into(),
            )),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.publish_timeout_ms)
    }

    fn connected(&self) -> Result<(), BusError> {
        match self.inner.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(BusError::Unavailable(format!("not connected to NATS ({state})"))),
        }
    }

    async fn publish_to_category(
        &self,
        category: &str,
        subject: String,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.connected()?;
        let stream = self.ensure_category_stream(category).await?;
        match self.send(subject.clone(), msg_id, payload.clone()).await {
            Err(SendError::NoStream) => {
                // Deleted behind our back: forget it, create it again, try once more.
                self.forget_stream(&stream);
                self.ensure_category_stream(category).await?;
                self.send(subject, msg_id, payload)
                    .await
                    .map_err(SendError::into_bus)
            }
            other => other.map_err(SendError::into_bus),
        }
    }

    async fn send(&self, subject: String, msg_id: &str, payload: Bytes) -> Result<(), SendError> {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, msg_id);
        let publish = async {
            let ack: PublishAckFuture = self
                .inner
                .js
                .publish_with_headers(subject, headers, payload)
                .await?;
            ack.await
        };
        match tokio::time::timeout(self.timeout(), publish).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if matches!(e.kind(), PublishErrorKind::StreamNotFound) => Err(SendError::NoStream),
            Ok(Err(e)) => Err(SendError::Failed(e)),
            Err(_) => Err(SendError::TimedOut),
        }
    }

    async fn ensure_category_stream(&self, category: &str) -> Result<String, BusError> {
        let name = stream_name(category);
        self.ensure_stream(&name, &format!("mercato.{category}.>"))
            .await?;
        Ok(name)
    }

    async fn dlq_stream(&self) -> Result<stream::Stream<()>, BusError> {
        self.ensure_stream(DLQ_STREAM, DLQ_SUBJECTS).await?;
        self.inner
            .js
            .get_stream_no_info(DLQ_STREAM)
            .await
            .map_err(|e| unavailable(DLQ_STREAM, e))
    }

    async fn ensure_stream(&self, name: &str, subjects: &str) -> Result<(), BusError> {
        if self
            .inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
        {
            return Ok(());
        }
        let config = stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            storage: StorageType::File,
            num_replicas: self.inner.config.replicas,
            duplicate_window: Duration::from_secs(self.inner.config.duplicate_window_secs),
            ..stream::Config::default()
        };
        let stream =
            match tokio::time::timeout(self.timeout(), self.inner.js.get_or_create_stream(config)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return Err(match e.kind() {
                        // The server answered and refused (replicas it cannot place, say): retrying
                        // will not help.
                        CreateStreamErrorKind::JetStream(js) if js.code() < 500 => {
                            BusError::Config(format!("stream {name}: {js}"))
                        }
                        _ => unavailable(format!("stream {name}"), e),
                    });
                }
                Err(_) => return Err(BusError::Unavailable(format!("creating stream {name} timed out"))),
            };
        // Categories that differ only in case or in '-' versus '_' map to one stream name.
        if !stream.cached_info().config.subjects.iter().any(|s| s == subjects) {
            return Err(BusError::Config(format!(
                "stream {name} already exists for subjects {:?}, not {subjects}",
                stream.cached_info().config.subjects
            )));
        }
        self.inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
        Ok(())
    }

    fn forget_stream(&self, name: &str) {
        self.inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

enum SendError {
    NoStream,
    TimedOut,
    Failed(PublishError),
}

impl SendError {
    fn into_bus(self) -> BusError {
        match self {
            Self::NoStream => BusError::Unavailable("no stream takes the subject".into()),
            Self::TimedOut => BusError::Unavailable("the publish was not acknowledged in time".into()),
            Self::Failed(e) => unavailable("publish", e),
        }
    }
}

/// A member of a consumer group: a handle on the group's durable pull consumer.
pub struct NatsConsumer {
    bus: NatsBus,
    /// Boxed: the consumer's cached info is large, and `Consumer` holds either backend inline.
    consumer: Box<PullConsumer>,
    group: String,
}

impl std::fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConsumer")
            .field("group", &self.group)
            .field("stream", &self.consumer.cached_info().stream_name)
            .finish_non_exhaustive()
    }
}

impl NatsConsumer {
    /// One pull request, `no_wait` with an expiry: the server answers as soon as it has any
    /// messages (up to `max`), or after `wait` with none. A plain batch would hold the request the
    /// whole `wait` for the batch to fill; a `no_wait` with no expiry could be parked on the server
    /// after this client gave up on it, and whatever it was handed would be lost until the ack
    /// wait.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the server is not connected or refuses the pull.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.bus.connected()?;
        self.pull(max, wait.max(MIN_PULL_EXPIRY)).await
    }

    /// Messages not yet delivered to the group plus those delivered and not acknowledged.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the server cannot be reached.
    pub async fn lag(&self) -> Result<u64, BusError> {
        self.bus.connected()?;
        let info = match tokio::time::timeout(self.bus.timeout(), self.consumer.get_info()).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(unavailable("consumer info", e)),
            Err(_) => return Err(BusError::Unavailable("consumer info timed out".into())),
        };
        Ok(info
            .num_pending
            .saturating_add(u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX)))
    }

    async fn pull(&self, max: usize, expires: Duration) -> Result<Vec<Delivery>, BusError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(expires)
            .messages()
            .await
            .map_err(|e| unavailable("pull request", e))?;
        // The server ends the request by `expires`; this bounds a reply lost to a disconnect, and
        // is later than the server's expiry so the server never serves a request given up here.
        let deadline = Instant::now() + expires + self.bus.timeout();
        let mut deliveries = Vec::new();
        loop {
            let message = match tokio::time::timeout_at(deadline, batch.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(None) | Err(_) => break,
                // A status such as "max ack pending reached" ends the batch; keep what came.
                Ok(Some(Err(e))) if !deliveries.is_empty() => {
                    tracing::debug!(error = %e, group = %self.group, "pull ended early");
                    break;
                }
                Ok(Some(Err(e))) => return Err(BusError::Unavailable(format!("pull: {e}"))),
            };
            if let Some(delivery) = self.delivery(message).await {
                deliveries.push(delivery);
            }
        }
        Ok(deliveries)
    }

    async fn delivery(&self, message: jetstream::Message) -> Option<Delivery> {
        let (delivered, seq) = match message.info() {
            Ok(info) => (info.delivered, info.stream_sequence),
            Err(error) => {
                tracing::error!(%error, group = %self.group, "a delivery without JetStream metadata");
                return None;
            }
        };
        match serde_json::from_slice::<Envelope>(&message.payload) {
            Ok(envelope) => Some(Delivery {
                envelope,
                attempt: u32::try_from(delivered.max(1)).unwrap_or(u32::MAX),
                handle: DeliveryHandle::Nats(NatsHandle {
                    message: Box::new(message),
                    bus: self.bus.clone(),
                    group: self.group.clone(),
                }),
            }),
            Err(error) => {
                // Not an envelope, so no handler can take it and it cannot be a dead letter.
                // Terminating stops the redeliveries; the stream keeps it for inspection.
                tracing::error!(%error, seq, group = %self.group, "terminating a message that is not an envelope");
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%error, seq, "could not terminate the unreadable message");
                }
                None
            }
        }
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

/// One delivery of one JetStream message.
pub struct NatsHandle {
    /// Boxed for the same reason as [`NatsConsumer::consumer`].
    message: Box<jetstream::Message>,
    bus: NatsBus,
    group: String,
}

impl std::fmt::Debug for NatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsHandle")
            .field("group", &self.group)
            .field("subject", &self.message.subject)
            .finish_non_exhaustive()
    }
}

impl NatsHandle {
    /// # Errors
    /// [`BusError::Unavailable`] when the server did not confirm; the message comes again.
    pub async fn ack(self) -> Result<(), BusError> {
        self.confirm(AckKind::Ack).await
    }

    /// # Errors
    /// [`BusError::Unavailable`] when the server did not confirm; the message comes again after
    /// the ack wait.
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        let kind = if delay.is_zero() {
            AckKind::Nak(None)
        } else {
            AckKind::Nak(Some(delay))
        };
        self.confirm(kind).await
    }

    /// Stores the record in the dead-letter stream, then terminates the delivery. The record's
    /// message id names this stream position, so a park retried after a lost confirmation stores
    /// one dead letter.
    ///
    /// # Errors
    /// [`BusError::Unavailable`]; the message comes again after the ack wait.
    pub async fn park(self, envelope: &Envelope, attempts: u32, error: &str) -> Result<(), BusError> {
        let seq = self.message.info().map(|i| i.stream_sequence).unwrap_or_default();
        let record = ParkedRecord {
            group: self.group.clone(),
            error: truncate(error, MAX_ERROR_BYTES).to_owned(),
            attempts,
            parked_at: mercato_storage::now_millis(),
            envelope: envelope.clone(),
        };
        let payload = Bytes::from(serde_json::to_vec(&record).map_err(|e| BusError::Malformed {
            id: envelope.id.clone(),
            reason: e.to_string(),
        })?);
        self.bus.connected()?;
        self.bus.ensure_stream(DLQ_STREAM, DLQ_SUBJECTS).await?;
        let msg_id = format!("{}:parked:{}:{seq}", self.group, envelope.id);
        let subject = format!("mercato.dlq.{}", self.group);
        match self.bus.send(subject.clone(), &msg_id, payload.clone()).await {
            Err(SendError::NoStream) => {
                self.bus.forget_stream(DLQ_STREAM);
                self.bus.ensure_stream(DLQ_STREAM, DLQ_SUBJECTS).await?;
                self.bus
                    .send(subject, &msg_id, payload)
                    .await
                    .map_err(SendError::into_bus)?;
            }
            other => other.map_err(SendError::into_bus)?,
        }
        self.confirm(AckKind::Term).await
    }

    /// Sends `kind` and waits for the server to confirm it received it.
    async fn confirm(&self, kind: AckKind) -> Result<(), BusError> {
        self.bus.connected()?;
        match tokio::time::timeout(self.bus.timeout(), self.message.double_ack_with(kind)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(format!("acknowledgement: {e}"))),
            Err(_) => Err(BusError::Unavailable(
                "acknowledgement not confirmed in time".into(),
            )),
        }
    }
}

fn validate(config: &BusConfig) -> Result<(), BusError> {
    if !config.is_nats() {
        return Err(BusError::Config(format!(
            "bus.url {:?} is not a nats:// URL",
            config.url
        )));
    }
    if config.ack_wait_ms == 0 {
        return Err(BusError::Config("bus.ack_wait_ms must be above 0".into()));
    }
    if config.publish_timeout_ms == 0 {
        return Err(BusError::Config("bus.publish_timeout_ms must be above 0".into()));
    }
    if config.duplicate_window_secs == 0 {
        return Err(BusError::Config(
            "bus.duplicate_window_secs must be above 0".into(),
        ));
    }
    if !(1..=5).contains(&config.replicas) {
        return Err(BusError::Config("bus.replicas must be between 1 and 5".into()));
    }
    Ok(())
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{what}: {error}"))
}

/// `MERCATO_<CATEGORY>`: stream names may not hold '.', and '-' reads badly in them.
fn stream_name(category: &str) -> String {
    format!("MERCATO_{}", category.to_ascii_uppercase().replace('-', "_"))
}

/// Event types are free text; a subject token may not hold '.', wildcards or whitespace.
fn subject_token(event_type: &str) -> String {
    let token: String = event_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if token.is_empty() { "_".into() } else { token }
}

fn check_envelope(envelope: &Envelope) -> Result<(), BusError> {
    let category = envelope.category();
    let category_ok = !category.is_empty()
        && category.len() <= 64
        && category != "dlq"
        && category
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !category_ok {
        return Err(BusError::Malformed {
            id: envelope.id.clone(),
            reason: format!("category {category:?} must be 1-64 of [A-Za-z0-9_-] and not \"dlq\""),
        });
    }
    // The id travels in a header, where a line break would end it.
    if envelope.id.is_empty() || envelope.id.len() > 128 || envelope.id.chars().any(char::is_control) {
        return Err(BusError::Malformed {
            id: envelope.id.clone(),
            reason: "the event id must be 1-128 characters without control characters".into(),
        });
    }
    Ok(())
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_upper_case_with_underscores() {
        assert_eq!(stream_name("identity"), "MERCATO_IDENTITY");
        assert_eq!(stream_name("order-history"), "MERCATO_ORDER_HISTORY");
    }

    #[test]
    fn event_types_become_single_subject_tokens() {
        assert_eq!(subject_token("OrderCreated"), "OrderCreated");
        assert_eq!(subject_token("a.b *>"), "a_b___");
        assert_eq!(subject_token(""), "_");
    }

    #[test]
    fn settings_nats_cannot_use_are_refused_by_name() {
        let good = BusConfig {
            url: "nats://127.0.0.1:4222".into(),
            ..BusConfig::default()
        };
        assert!(validate(&good).is_ok());
        let zero_wait = BusConfig {
            ack_wait_ms: 0,
            ..good.clone()
        };
        assert!(
            validate(&zero_wait)
                .unwrap_err()
                .to_string()
                .contains("bus.ack_wait_ms")
        );
        let replicas = BusConfig { replicas: 0, ..good };
        assert!(
            validate(&replicas)
                .unwrap_err()
                .to_string()
                .contains("bus.replicas")
        );
    }

    #[test]
    fn a_parked_record_round_trips() {
        let envelope = Envelope {
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
            payload: serde_json::json!({"k": 1}),
        };
        let record = ParkedRecord {
            group: "g".into(),
            error: "boom\nline two".into(),
            attempts: 3,
            parked_at: 7,
            envelope: envelope.clone(),
        };
        let back: ParkedRecord = serde_json::from_slice(&serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(back.envelope, envelope);
        assert_eq!(back.error, "boom\nline two");
        assert!(check_envelope(&envelope).is_ok());
        let bad_id = Envelope {
            id: "a\r\nb".into(),
            ..envelope
        };
        assert!(check_envelope(&bad_id).is_err());
    }
}
