//! Batch publishes on NATS: every message of the batch is sent before any acknowledgement is
//! awaited, so a batch costs about one round trip instead of one per message. The server stores
//! what one connection sends in the order it was sent, so the acknowledged prefix is in order.

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use bytes::Bytes;
use tokio::time::Instant;

use super::{NatsBus, StreamPatience, check_envelope, subject_token, unavailable};
use crate::bus::{BusError, PartialPublish};
use crate::envelope::Envelope;

/// Why a run of publishes stopped, after how many acknowledgements.
struct Stopped {
    acknowledged: usize,
    /// The stream of this category was not there (deleted behind our back).
    missing_stream: Option<String>,
    error: BusError,
}

impl NatsBus {
    /// Publishes `envelopes` in order with `Nats-Msg-Id` set to each event id; see
    /// [`crate::Bus::publish_batch`]. A missing stream (deleted behind this client's back, or
    /// not taking messages yet) is created again and the rest of the batch sent again, for up to
    /// the bus timeout.
    ///
    /// # Errors
    /// [`PartialPublish`] with the acknowledged prefix.
    pub async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), PartialPublish> {
        let mut done = 0;
        let mut patience = StreamPatience::new(self.timeout());
        loop {
            let Err(stopped) = self.publish_run(&envelopes[done..]).await else {
                return Ok(());
            };
            done += stopped.acknowledged;
            match stopped.missing_stream {
                Some(stream) if patience.wait().await => self.forget_stream(&stream),
                _ => {
                    return Err(PartialPublish {
                        acknowledged: done,
                        error: stopped.error,
                    });
                }
            }
        }
    }

    async fn publish_run(&self, envelopes: &[Envelope]) -> Result<(), Stopped> {
        let stop = |acknowledged, error| Stopped {
            acknowledged,
            missing_stream: None,
            error,
        };
        self.connected().map_err(|e| stop(0, e))?;
        let deadline = Instant::now() + self.timeout();
        let mut pending: Vec<(PublishAckFuture, String)> = Vec::with_capacity(envelopes.len());
        let mut unsent = None;
        for envelope in envelopes {
            match self.send_one(envelope, deadline).await {
                Ok(sent) => pending.push(sent),
                Err(error) => {
                    unsent = Some(error);
                    break;
                }
            }
        }
        let sent = pending.len();
        for (acknowledged, (ack, stream)) in pending.into_iter().enumerate() {
            match tokio::time::timeout_at(deadline, ack).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if matches!(e.kind(), PublishErrorKind::StreamNotFound) => {
                    return Err(Stopped {
                        acknowledged,
                        missing_stream: Some(stream),
                        error: BusError::Unavailable("no stream takes the subject".into()),
                    });
                }
                Ok(Err(e)) => return Err(stop(acknowledged, unavailable("publish", e))),
                Err(_) => {
                    return Err(stop(
                        acknowledged,
                        BusError::Unavailable("the publish was not acknowledged in time".into()),
                    ));
                }
            }
        }
        match unsent {
            Some(error) => Err(stop(sent, error)),
            None => Ok(()),
        }
    }

    /// Sends one envelope without waiting for its acknowledgement; returns the acknowledgement
    /// and the stream that should store it.
    async fn send_one(
        &self,
        envelope: &Envelope,
        deadline: Instant,
    ) -> Result<(PublishAckFuture, String), BusError> {
        check_envelope(envelope)?;
        let category = envelope.category();
        let stream = self.ensure_category_stream(category).await?;
        let subject = format!("mercato.{category}.{}", subject_token(&envelope.event_type));
        let payload = Bytes::from(serde_json::to_vec(envelope).map_err(|e| BusError::Malformed {
            id: envelope.id.clone(),
            reason: e.to_string(),
        })?);
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, envelope.id.as_str());
        let send = self.inner.js.publish_with_headers(subject, headers, payload);
        match tokio::time::timeout_at(deadline, send).await {
            Ok(Ok(ack)) => Ok((ack, stream)),
            Ok(Err(e)) => Err(unavailable("publish", e)),
            Err(_) => Err(BusError::Unavailable(
                "the publish could not be sent in time".into(),
            )),
        }
    }
}
