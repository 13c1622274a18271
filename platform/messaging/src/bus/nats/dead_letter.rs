//! Dead letters on NATS: the `MERCATO_DLQ` stream, parking a delivery there, listing and
//! replaying what it holds.

use async_nats::jetstream::AckKind;
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{NatsBus, NatsHandle, check_envelope, subject_token, unavailable};
use crate::bus::{BusError, DeadLetter, parked_error};
use crate::envelope::Envelope;

const DLQ_STREAM: &str = "MERCATO_DLQ";
const DLQ_SUBJECTS: &str = "mercato.dlq.>";

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

    async fn dlq_stream(&self) -> Result<stream::Stream<()>, BusError> {
        self.ensure_stream(DLQ_STREAM, DLQ_SUBJECTS).await?;
        self.inner
            .js
            .get_stream_no_info(DLQ_STREAM)
            .await
            .map_err(|e| unavailable(DLQ_STREAM, e))
    }
}

impl NatsHandle {
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
            error: parked_error(error).to_owned(),
            attempts,
            parked_at: mercato_storage::now_millis(),
            envelope: envelope.clone(),
        };
        let payload = Bytes::from(serde_json::to_vec(&record).map_err(|e| BusError::Malformed {
            id: envelope.id.clone(),
            reason: e.to_string(),
        })?);
        let msg_id = format!("{}:parked:{}:{seq}", self.group, envelope.id);
        let subject = format!("mercato.dlq.{}", self.group);
        self.bus
            .send_to_stream(DLQ_STREAM, DLQ_SUBJECTS, subject, &msg_id, payload)
            .await?;
        self.confirm(AckKind::Term).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_record_round_trips() {
        let envelope = crate::bus::tests::envelope(serde_json::json!({"k": 1}));
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
