//! Consumer groups on NATS: a durable pull consumer per group, and the deliveries it hands out.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt as _;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{NatsBus, subject_token, unavailable};
use crate::bus::in_hand::Held;
use crate::bus::{BusError, ConsumerSpec, Delivery, DeliveryHandle};
use crate::envelope::Envelope;

/// The shortest pull: a fetch that does not want to wait still lets the server expire it.
const MIN_PULL_EXPIRY: Duration = Duration::from_millis(10);

impl NatsBus {
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
        let filter = Filter::of(spec);
        let config = pull::Config {
            durable_name: Some(spec.group.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.inner.config.ack_wait(),
            max_deliver: -1,
            deliver_policy: DeliverPolicy::All,
            filter_subject: filter.subject.clone(),
            ..pull::Config::default()
        };
        let consumer: PullConsumer = match self
            .inner
            .js
            .create_consumer_on_stream(config.clone(), &stream)
            .await
        {
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
        let consumer = if filter.matches(&consumer.cached_info().config) {
            consumer
        } else {
            self.refilter(consumer, config, &stream).await?
        };
        Ok(NatsConsumer {
            bus: self.clone(),
            consumer: Arc::new(consumer),
            group: spec.group.clone(),
            only: filter.here,
        })
    }

    /// A group's consumer whose filter the server would not change in place (servers before
    /// 2.10): deleted and created again with the new filter from just after the old one's ack
    /// floor. Nothing is lost: what was acknowledged past the floor comes again and the inbox
    /// skips it; what other members held comes again from the new consumer.
    async fn refilter(
        &self,
        old: PullConsumer,
        mut config: pull::Config,
        stream: &str,
    ) -> Result<PullConsumer, BusError> {
        let group = config.durable_name.clone().unwrap_or_default();
        let floor = old.cached_info().ack_floor.stream_sequence;
        tracing::info!(
            group,
            stream,
            floor,
            "the group's event types changed; recreating its consumer"
        );
        let what = || format!("consumer {group} on {stream}");
        self.inner
            .js
            .delete_consumer_from_stream(&group, stream)
            .await
            .map_err(|e| unavailable(what(), e))?;
        config.deliver_policy = DeliverPolicy::ByStartSequence {
            start_sequence: floor + 1,
        };
        self.inner
            .js
            .create_consumer_on_stream(config, stream)
            .await
            .map_err(|e| unavailable(what(), e))
    }
}

/// Which subjects a group reads. The server filters a group of one event type. A group of
/// several is filtered here: several filter subjects on one consumer need a 2.10 server and the
/// client's `server_2_10` feature, and a server before 2.10 takes one filter subject.
struct Filter {
    subject: String,
    /// Subjects this client keeps, acknowledging the rest unseen; `None` keeps everything.
    here: Option<HashSet<String>>,
}

impl Filter {
    fn of(spec: &ConsumerSpec) -> Self {
        let mut subjects: BTreeSet<String> = spec
            .event_types
            .iter()
            .map(|t| format!("mercato.{}.{}", spec.category, subject_token(t)))
            .collect();
        match subjects.len() {
            0 => Self {
                subject: String::new(),
                here: None,
            },
            1 => Self {
                subject: subjects.pop_first().unwrap_or_default(),
                here: None,
            },
            _ => Self {
                subject: String::new(),
                here: Some(subjects.into_iter().collect()),
            },
        }
    }

    fn matches(&self, config: &async_nats::jetstream::consumer::Config) -> bool {
        config.filter_subject == self.subject
    }
}

/// A member of a consumer group: a handle on the group's durable pull consumer.
pub struct NatsConsumer {
    bus: NatsBus,
    /// Shared with the pull in flight; behind a pointer, as the cached info is large and
    /// `Consumer` holds either backend inline.
    consumer: Arc<PullConsumer>,
    group: String,
    /// See [`Filter::here`].
    only: Option<HashSet<String>>,
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
    /// The pull runs on a task of its own, so dropping this future (a consumer that stops while
    /// it waits) loses nothing: what the server hands out for a fetch nobody waits for any more
    /// is given back at once.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the server is not connected or refuses the pull.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.bus.connected()?;
        let member = Self {
            bus: self.bus.clone(),
            consumer: Arc::clone(&self.consumer),
            group: self.group.clone(),
            only: self.only.clone(),
        };
        let (answer, answered) = oneshot::channel();
        tokio::spawn(async move {
            let pulled = member.pull(max, wait.max(MIN_PULL_EXPIRY)).await;
            if let Err(Ok(unwanted)) = answer.send(pulled) {
                hand_back(unwanted).await;
            }
        });
        answered
            .await
            .map_err(|_| BusError::Unavailable("the pull ended without an answer".into()))?
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
        let mut unwanted = Vec::new();
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
            if self
                .only
                .as_ref()
                .is_some_and(|only| !only.contains(message.subject.as_str()))
            {
                unwanted.push(message);
                continue;
            }
            if let Some(delivery) = self.delivery(message).await {
                deliveries.push(delivery);
            }
        }
        // Not confirmed: one whose ack is lost comes again and is dropped again.
        for result in futures_util::future::join_all(unwanted.iter().map(|m| m.ack())).await {
            if let Err(error) = result {
                tracing::debug!(%error, group = %self.group, "could not acknowledge a skipped type");
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
                    held: message
                        .reply
                        .clone()
                        .map(|reply| self.bus.inner.in_hand.hold(reply)),
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

/// Gives deliveries back to the group at once, for a fetch whose caller went away.
async fn hand_back(deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        if let Err(error) = delivery.nak(Duration::ZERO).await {
            tracing::warn!(%error, "cannot give back a delivery; it comes again after the ack wait");
        }
    }
}

/// One delivery of one JetStream message, kept in progress while the handle lives.
pub struct NatsHandle {
    /// Boxed: the message is large, and `Delivery` holds either backend inline.
    pub(super) message: Box<jetstream::Message>,
    pub(super) bus: NatsBus,
    pub(super) group: String,
    /// Its reply subject among the deliveries in hand; a message without one cannot be acked.
    pub(super) held: Option<Held<Subject>>,
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

    /// Sends `kind` and waits for the server to confirm it received it.
    pub(super) async fn confirm(&self, kind: AckKind) -> Result<(), BusError> {
        if let Some(held) = &self.held {
            held.settle().await;
        }
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
