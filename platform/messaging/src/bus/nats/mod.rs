//! The NATS JetStream bus.
//!
//! - A stream per category, `MERCATO_<CATEGORY>` with subjects `mercato.<category>.>`, file storage,
//!   created on first use; events go to `mercato.<category>.<event type>` with `Nats-Msg-Id` set to
//!   the event id, so the server drops a republish inside the duplicate window.
//! - [`consumer`]: a durable pull consumer per group, explicit acks, unlimited deliveries: the
//!   caller decides when a message is parked. The connection's keeper sends a progress ack
//!   (`+WPI`) for every delivery in hand three times per ack wait, so the ack wait can be short:
//!   it only decides how soon the messages of a process that died come again.
//! - [`dead_letter`]: parked messages go to the `MERCATO_DLQ` stream (`mercato.dlq.<group>`) as a
//!   JSON record (group, error, attempts, envelope); a dead letter's id is its sequence there.
//! - [`subscription`]: a core NATS subscription on `mercato.<category>.>`: it sees what is
//!   published while it is connected. Every disconnect, reconnect or dropped message (a slow
//!   subscriber) moves a connection epoch, and each subscription reports the move as a gap.
//!
//! The client reconnects by itself after the server restarts. While it is not connected, every
//! call fails fast with [`BusError::Unavailable`] instead of queueing behind the reconnect.

mod batch;
mod consumer;
mod dead_letter;
mod subscription;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::context::{
    CreateStreamErrorKind, PublishAckFuture, PublishError, PublishErrorKind,
};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::{Client, Subject};
use bytes::Bytes;
use tokio::sync::watch;

pub use consumer::{NatsConsumer, NatsHandle};
pub use subscription::NatsSubscription;

use super::in_hand::{InHand, Keeper, renewal_interval};
use super::{BusConfig, BusError, check_envelope_category};
use crate::envelope::Envelope;

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
    /// The reply subjects of the deliveries in hand, which the keeper marks as in progress.
    in_hand: Arc<InHand<Subject>>,
    _keeper: Keeper,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("url", &mercato_storage::db::redact_url(&self.inner.config.url))
            .field("state", &self.inner.client.connection_state())
            .finish_non_exhaustive()
    }
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
        let (address, credentials) = mercato_storage::db::split_credentials(&config.url);
        let options = match credentials {
            // The client ignores a user and password in the URL: a service's own NATS user.
            Some((user, password)) => async_nats::ConnectOptions::with_user_and_password(user, password),
            None => async_nats::ConnectOptions::new(),
        };
        let client = options
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
            .connect(address.as_str())
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
        let in_hand = InHand::new();
        let keeper = Keeper::spawn(keep_in_progress(
            client.clone(),
            Arc::clone(&in_hand),
            renewal_interval(config.ack_wait()),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                js,
                config: config.clone(),
                streams: Mutex::new(HashSet::new()),
                epoch,
                in_hand,
                _keeper: keeper,
            }),
        })
    }

    /// Publishes `envelope` and waits for the stream to store it.
    ///
    /// # Errors
    /// [`BusError::Malformed`] for an envelope no subject can carry; [`BusError::Unavailable`] when
    /// the server did not acknowledge it within `publish_timeout_ms`.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        self.publish_batch(std::slice::from_ref(envelope))
            .await
            .map_err(|failed| failed.error)
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
        let stream = stream_name(category);
        self.send_to_stream(
            &stream,
            &format!("mercato.{category}.>"),
            subject,
            msg_id,
            payload,
        )
        .await
    }

    /// Sends one message to `stream` (taking `subjects`), creating the stream when it is missing:
    /// never made, or deleted behind this client's back.
    async fn send_to_stream(
        &self,
        stream: &str,
        subjects: &str,
        subject: String,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.connected()?;
        let mut patience = StreamPatience::new(self.timeout());
        loop {
            self.ensure_stream(stream, subjects).await?;
            match self.send(subject.clone(), msg_id, payload.clone()).await {
                Err(SendError::NoStream) if patience.wait().await => self.forget_stream(stream),
                other => return other.map_err(SendError::into_bus),
            }
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

/// How long a publish goes on creating a missing stream and sending again. A stream created a
/// moment ago can answer "no responders" for a short while on a busy server, so one more try
/// straight away is not enough.
pub(super) struct StreamPatience {
    until: tokio::time::Instant,
    pause: Duration,
}

impl StreamPatience {
    pub(super) fn new(within: Duration) -> Self {
        Self {
            until: tokio::time::Instant::now() + within,
            pause: Duration::from_millis(10),
        }
    }

    /// Waits a little before the next try; false once the time is up.
    pub(super) async fn wait(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now >= self.until {
            return false;
        }
        tokio::time::sleep(self.pause.min(self.until - now)).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(250));
        true
    }
}

/// Restarts the ack wait of every delivery in hand, every `every`. A progress ack is not
/// confirmed: one lost to a disconnect is followed by the next, and a delivery whose wait ran out
/// meanwhile was redelivered, which the inbox makes harmless.
async fn keep_in_progress(client: Client, in_hand: Arc<InHand<Subject>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let _renewing = in_hand.renewing().await;
        for reply in in_hand.items() {
            if let Err(error) = client.publish(reply, AckKind::Progress.into()).await {
                tracing::debug!(%error, "cannot send a progress ack");
            }
        }
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
    check_envelope_category(envelope)?;
    // The id travels in a header, where a line break would end it.
    if envelope.id.is_empty() || envelope.id.len() > 128 || envelope.id.chars().any(char::is_control) {
        return Err(BusError::Malformed {
            id: envelope.id.clone(),
            reason: "the event id must be 1-128 characters without control characters".into(),
        });
    }
    Ok(())
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
}
