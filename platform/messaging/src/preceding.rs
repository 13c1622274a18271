//! What the relay remembers of each stream it published: the latest position of every event type
//! (`outbox_stream_types`). Each envelope goes out with the part of it before its own position
//! ([`Envelope::preceding`]), so a consumer group that receives only some types knows which
//! earlier event it must wait for, and never waits for one it will not receive.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mercato_storage::sqlx;
use mercato_storage::{Db, StorageError, Tx};

use crate::envelope::Envelope;

/// Per stream, per event type, the latest position published.
#[derive(Debug, Default)]
pub(crate) struct Known(HashMap<String, BTreeMap<String, i64>>);

/// Streams per read of what is stored.
const STREAMS_PER_READ: usize = 100;

impl Known {
    /// What is stored for the streams of `envelopes`.
    pub(crate) async fn load(db: &Db, envelopes: &[Envelope]) -> Result<Self, StorageError> {
        let streams: BTreeSet<&str> = envelopes.iter().map(|e| e.stream_id.as_str()).collect();
        let mut known = Self::default();
        let streams: Vec<&str> = streams.into_iter().collect();
        for chunk in streams.chunks(STREAMS_PER_READ) {
            let width = mercato_storage::in_list_width(chunk.len());
            let placeholders: Vec<String> = (1..=width).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT stream_id, event_type, last_seq FROM outbox_stream_types WHERE stream_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as::<_, (String, String, i64)>(&sql);
            for i in 0..width {
                query = query.bind(chunk[i.min(chunk.len() - 1)]);
            }
            for (stream, event_type, seq) in query.fetch_all(db.pool()).await? {
                known.0.entry(stream).or_default().insert(event_type, seq);
            }
        }
        Ok(known)
    }

    /// Gives each envelope, in order, what came before it in its stream, and remembers it.
    pub(crate) fn fill(&mut self, envelopes: &mut [Envelope]) {
        for envelope in envelopes {
            let types = self.0.entry(envelope.stream_id.clone()).or_default();
            envelope.preceding = types
                .iter()
                .filter(|&(_, &seq)| seq < envelope.stream_seq)
                .map(|(t, &seq)| (t.clone(), seq))
                .collect();
            let latest = types.entry(envelope.event_type.clone()).or_insert(0);
            *latest = (*latest).max(envelope.stream_seq);
        }
    }
}

/// Stores the latest position of each (stream, type) among `published`, in `tx`; never moves
/// one back.
pub(crate) async fn remember(tx: &mut Tx, published: &[Envelope]) -> Result<(), StorageError> {
    let mut latest: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for envelope in published {
        let seq = latest
            .entry((&envelope.stream_id, &envelope.event_type))
            .or_insert(envelope.stream_seq);
        *seq = (*seq).max(envelope.stream_seq);
    }
    let rows: Vec<([&str; 2], i64)> = latest
        .into_iter()
        .map(|((stream, event_type), seq)| ([stream, event_type], seq))
        .collect();
    crate::latest::store(
        tx,
        "outbox_stream_types",
        ["stream_id", "event_type"],
        "last_seq",
        &rows,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: &str, seq: i64, event_type: &str) -> Envelope {
        let mut envelope = crate::bus::tests::envelope(serde_json::json!({}));
        envelope.stream_id = stream.into();
        envelope.stream_seq = seq;
        envelope.event_type = event_type.into();
        envelope
    }

    #[test]
    fn each_envelope_gets_the_latest_earlier_position_of_every_type_in_its_stream() {
        let mut known = Known::default();
        known
            .0
            .insert("o-1".into(), BTreeMap::from([("Placed".into(), 1)]));
        let mut batch = [
            event("o-1", 2, "Reserve"),
            event("o-2", 1, "Placed"),
            event("o-1", 3, "Reserved"),
            event("o-1", 4, "Reserve"),
        ];
        known.fill(&mut batch);
        let of = |e: &Envelope| e.preceding.clone().into_iter().collect::<Vec<_>>();
        assert_eq!(of(&batch[0]), [("Placed".into(), 1)]);
        assert!(
            batch[1].preceding.is_empty(),
            "a new stream has nothing before it"
        );
        assert_eq!(of(&batch[2]), [("Placed".into(), 1), ("Reserve".into(), 2)]);
        assert_eq!(
            of(&batch[3]),
            [
                ("Placed".into(), 1),
                ("Reserve".into(), 2),
                ("Reserved".into(), 3)
            ]
        );
        assert_eq!(batch[3].predecessor(&["Reserve".into()]), 2);
    }

    #[test]
    fn a_republished_envelope_gets_only_what_came_before_it() {
        // The store already holds this envelope's own position: a crash after remembering.
        let mut known = Known::default();
        known.0.insert(
            "o-1".into(),
            BTreeMap::from([("Placed".into(), 1), ("Reserve".into(), 2)]),
        );
        let mut again = [event("o-1", 2, "Reserve")];
        known.fill(&mut again);
        assert_eq!(
            again[0].preceding.clone().into_iter().collect::<Vec<_>>(),
            [("Placed".into(), 1)]
        );
    }
}
