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

/// Rewrites a payload of one schema version into the next (vN to vN+1).
///
/// # Errors
/// The payload does not have the older shape.
pub type Upcaster = fn(serde_json::Value) -> Result<serde_json::Value, String>;

/// A payload type: its name on the wire, its current schema version, and the steps that bring
/// each older version up to date.
///
/// A new version adds one step to [`Event::UPCASTERS`] and never edits an earlier one, so an
/// event written at any version is read through the same chain of small rewrites.
pub trait Event: Serialize + DeserializeOwned {
    const TYPE: &'static str;
    /// One upcaster per version step, oldest first: `UPCASTERS[0]` reads v1 as v2, and so on.
    const UPCASTERS: &'static [Upcaster] = &[];
    /// The current schema version: the one the last upcaster produces.
    #[allow(clippy::cast_possible_truncation)]
    const VERSION: u32 = Self::UPCASTERS.len() as u32 + 1;
}

/// Brings `payload`, written as `E` at schema `version`, to `E`'s current version through each
/// step of [`Event::UPCASTERS`] in turn.
///
/// # Errors
/// A version newer than `E`'s, a version 0, upcasters that do not reach `E::VERSION`, or a step
/// that refuses the payload.
pub fn upcast<E: Event>(
    version: u32,
    mut payload: serde_json::Value,
) -> Result<serde_json::Value, EnvelopeError> {
    if version > E::VERSION {
        return Err(EnvelopeError::TooNew {
            event_type: E::TYPE.to_owned(),
            version,
            known: E::VERSION,
        });
    }
    if E::UPCASTERS.len() + 1 != E::VERSION as usize {
        return Err(EnvelopeError::Upcast(format!(
            "{} is at version {} but has {} upcasters",
            E::TYPE,
            E::VERSION,
            E::UPCASTERS.len()
        )));
    }
    let first = version
        .checked_sub(1)
        .ok_or_else(|| EnvelopeError::Upcast(format!("{} has no schema version 0", E::TYPE)))?;
    for (from, step) in (version..).zip(&E::UPCASTERS[first as usize..]) {
        payload = step(payload)
            .map_err(|e| EnvelopeError::Upcast(format!("{} v{from} to v{}: {e}", E::TYPE, from + 1)))?;
    }
    Ok(payload)
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
        let payload = if self.schema_version == E::VERSION {
            self.payload.clone()
        } else {
            upcast::<E>(self.schema_version, self.payload.clone())?
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
        // v1 `{"name"}`, v2 `{"name", "title"}`, v3 `{"full_name"}`.
        const UPCASTERS: &'static [Upcaster] = &[add_title, join_title];
    }

    fn add_title(mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
        payload
            .as_object_mut()
            .ok_or("not an object")?
            .insert("title".into(), serde_json::json!(""));
        Ok(payload)
    }

    fn join_title(payload: serde_json::Value) -> Result<serde_json::Value, String> {
        let name = payload["name"].as_str().ok_or("no name")?;
        let title = payload["title"].as_str().ok_or("no title")?;
        let full_name = format!("{title} {name}").trim().to_owned();
        Ok(serde_json::json!({"full_name": full_name}))
    }

    fn renamed_at(version: u32, payload: serde_json::Value) -> Envelope {
        let mut env = Envelope::new(
            "x",
            "s-1",
            &Renamed {
                full_name: "A".into(),
            },
            &Context::default(),
        )
        .unwrap();
        env.schema_version = version;
        env.payload = payload;
        env
    }

    #[test]
    fn every_older_schema_is_upcast_step_by_step_on_read() {
        assert_eq!(Renamed::VERSION, 3, "the version follows the upcasters");
        let ada = |full_name: &str| Renamed {
            full_name: full_name.into(),
        };
        assert_eq!(
            renamed_at(1, serde_json::json!({"name": "Ada"}))
                .decode::<Renamed>()
                .unwrap(),
            ada("Ada")
        );
        assert_eq!(
            renamed_at(2, serde_json::json!({"name": "Ada", "title": "Countess"}))
                .decode::<Renamed>()
                .unwrap(),
            ada("Countess Ada")
        );
        assert_eq!(
            renamed_at(3, serde_json::json!({"full_name": "Ada"}))
                .decode::<Renamed>()
                .unwrap(),
            ada("Ada")
        );
    }

    #[test]
    fn a_payload_that_does_not_fit_its_version_names_the_failing_step() {
        let err = renamed_at(2, serde_json::json!({"name": "Ada"}))
            .decode::<Renamed>()
            .unwrap_err();
        assert_eq!(err.to_string(), "cannot upcast: Renamed v2 to v3: no title");
        let err = renamed_at(0, serde_json::json!({}))
            .decode::<Renamed>()
            .unwrap_err();
        assert!(matches!(err, EnvelopeError::Upcast(_)), "{err}");
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Skipped;

    impl Event for Skipped {
        const TYPE: &'static str = "Skipped";
        const VERSION: u32 = 2;
    }

    #[test]
    fn a_version_without_its_upcaster_is_refused_not_read_as_current() {
        let mut env = Envelope::new("x", "s-1", &Skipped, &Context::default()).unwrap();
        env.schema_version = 1;
        let err = env.decode::<Skipped>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot upcast: Skipped is at version 2 but has 0 upcasters"
        );
    }

    #[test]
    fn a_newer_schema_than_known_is_refused() {
        let env = renamed_at(4, serde_json::json!({"full_name": "A"}));
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
