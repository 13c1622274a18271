//! The one message format on every bus backend.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An event as it travels: metadata plus a JSON payload.
///
/// `stream_id` names the aggregate the event belongs to and `stream_seq` its position in that
/// stream (1, 2, …); consumers use the pair to apply a stream's events in order and exactly once,
/// whatever order the bus delivers them in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUIDv7: unique, and roughly time-ordered.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// The service that published it; also the event's category on the bus.
    pub source: String,
    pub stream_id: String,
    pub stream_seq: i64,
    /// Unix milliseconds.
    pub occurred_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// W3C trace context of the operation that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// For each event type seen earlier in this stream, the position of its latest event before
    /// this one (filled in by the relay). A consumer group that receives only some types finds
    /// its predecessor here: the greatest position among the types it handles.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preceding: BTreeMap<String, i64>,
    pub payload: serde_json::Value,
}

/// A payload type: its name on the wire, its current schema version, and how older versions
/// are brought up to date.
pub trait Event: Serialize + DeserializeOwned {
    const TYPE: &'static str;
    const VERSION: u32;

    /// Rewrites a payload of schema `version` (older than [`Event::VERSION`]) into the current
    /// shape. The default knows no older versions.
    ///
    /// # Errors
    /// The version is unknown or the payload does not fit it.
    fn upcast(version: u32, payload: serde_json::Value) -> Result<serde_json::Value, String> {
        let _ = payload;
        Err(format!(
            "{} has no upcaster from schema version {version}",
            Self::TYPE
        ))
    }
}

/// Why an envelope could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("expected a {expected} event, got {actual}")]
    WrongType { expected: &'static str, actual: String },
    #[error("{event_type} schema version {version} is newer than this service understands ({known})")]
    TooNew {
        event_type: String,
        version: u32,
        known: u32,
    },
    #[error("cannot upcast: {0}")]
    Upcast(String),
    #[error("malformed payload: {0}")]
    Payload(#[from] serde_json::Error),
}

/// What a publisher knows about the operation an event comes from.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub traceparent: Option<String>,
}

impl Envelope {
    /// Wraps `event` for `stream_id`; the stream position is filled in by the outbox or the
    /// event store when the event is written.
    ///
    /// # Errors
    /// The event does not serialise.
    pub fn new<E: Event>(
        source: &str,
        stream_id: &str,
        event: &E,
        context: &Context,
    ) -> Result<Self, EnvelopeError> {
        Ok(Self {
            id: uuid::Uuid::now_v7().to_string(),
            event_type: E::TYPE.to_owned(),
            schema_version: E::VERSION,
            source: source.to_owned(),
            stream_id: stream_id.to_owned(),
            stream_seq: 0,
            occurred_at: mercato_storage::now_millis(),
            correlation_id: context.correlation_id.clone(),
            causation_id: context.causation_id.clone(),
            traceparent: mercato_runtime::trace::produce(E::TYPE, stream_id, context.traceparent.as_deref()),
            preceding: BTreeMap::new(),
            payload: serde_json::to_value(event)?,
        })
    }

    /// True when the envelope carries an `E`.
    #[must_use]
    pub fn is<E: Event>(&self) -> bool {
        self.event_type == E::TYPE
    }

    /// The payload as an `E`, upcast from an older schema version when needed.
    ///
    /// # Errors
    /// Another event type, a newer schema than this build knows, or a payload that does not fit.
    pub fn decode<E: Event>(&self) -> Result<E, EnvelopeError> {
        if self.event_type != E::TYPE {
            return Err(EnvelopeError::WrongType {
                expected: E::TYPE,
                actual: self.event_type.clone(),
            });
        }
        let payload = match self.schema_version.cmp(&E::VERSION) {
            std::cmp::Ordering::Equal => self.payload.clone(),
            std::cmp::Ordering::Less => {
                E::upcast(self.schema_version, self.payload.clone()).map_err(EnvelopeError::Upcast)?
            }
            std::cmp::Ordering::Greater => {
                return Err(EnvelopeError::TooNew {
                    event_type: self.event_type.clone(),
                    version: self.schema_version,
                    known: E::VERSION,
                });
            }
        };
        Ok(serde_json::from_value(payload)?)
    }

    /// The context for events caused by this one: same correlation, this event as the cause.
    #[must_use]
    pub fn caused_context(&self) -> Context {
        Context {
            correlation_id: self.correlation_id.clone(),
            causation_id: Some(self.id.clone()),
            traceparent: self.traceparent.clone(),
        }
    }

    /// The position in this stream of the event that must be applied before this one by a
    /// consumer that handles `types` (empty: every type): the one just before it for a consumer
    /// of every type, else the latest earlier event of a type it handles (0 if none).
    #[must_use]
    pub fn predecessor(&self, types: &[String]) -> i64 {
        if types.is_empty() {
            return self.stream_seq - 1;
        }
        types
            .iter()
            .filter_map(|t| self.preceding.get(t))
            .copied()
            .filter(|&seq| seq < self.stream_seq)
            .max()
            .unwrap_or(0)
    }

    /// The bus category: events are grouped by the service that publishes them.
    #[must_use]
    pub fn category(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Renamed {
        full_name: String,
    }

    impl Event for Renamed {
        const TYPE: &'static str = "Renamed";
        const VERSION: u32 = 2;

        fn upcast(version: u32, mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
            match version {
                1 => {
                    let name = payload
                        .get_mut("name")
                        .map(serde_json::Value::take)
                        .ok_or("no name")?;
                    Ok(serde_json::json!({"full_name": name}))
                }
                v => Err(format!("unknown version {v}")),
            }
        }
    }

    #[test]
    fn an_older_schema_is_upcast_on_read() {
        let mut env = Envelope::new(
            "x",
            "s-1",
            &Renamed {
                full_name: "A".into(),
            },
            &Context::default(),
        )
        .unwrap();
        env.schema_version = 1;
        env.payload = serde_json::json!({"name": "Ada"});
        assert_eq!(
            env.decode::<Renamed>().unwrap(),
            Renamed {
                full_name: "Ada".into()
            }
        );
    }

    #[test]
    fn a_newer_schema_than_known_is_refused() {
        let mut env = Envelope::new(
            "x",
            "s-1",
            &Renamed {
                full_name: "A".into(),
            },
            &Context::default(),
        )
        .unwrap();
        env.schema_version = 3;
        assert!(matches!(
            env.decode::<Renamed>(),
            Err(EnvelopeError::TooNew { .. })
        ));
    }

    #[test]
    fn a_consumer_of_some_types_waits_only_for_the_latest_earlier_event_of_those() {
        let mut env = Envelope::new(
            "orders",
            "o-1",
            &Renamed {
                full_name: "A".into(),
            },
            &Context::default(),
        )
        .unwrap();
        env.stream_seq = 7;
        env.preceding = BTreeMap::from([("A".into(), 2), ("B".into(), 6), ("C".into(), 4)]);
        assert_eq!(env.predecessor(&[]), 6, "a consumer of everything waits for 6");
        assert_eq!(env.predecessor(&["A".into(), "C".into()]), 4);
        assert_eq!(env.predecessor(&["A".into()]), 2);
        assert_eq!(env.predecessor(&["D".into()]), 0, "nothing earlier to wait for");
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["preceding"]["B"], 6);
        let without: Envelope = serde_json::from_value({
            let mut j = json;
            j.as_object_mut().unwrap().remove("preceding");
            j
        })
        .unwrap();
        assert!(
            without.preceding.is_empty(),
            "an envelope from before the field still reads"
        );
    }

    #[test]
    fn the_envelope_round_trips_as_json_with_its_wire_names() {
        let env = Envelope::new(
            "identity",
            "u-1",
            &Renamed {
                full_name: "A".into(),
            },
            &Context::default(),
        )
        .unwrap();
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["type"], "Renamed");
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
    }
}
