//! Consumer-driven contracts as Pact files (specification V4, readable by any Pact
//! implementation): what each consumer expects of the messages it reads, committed under
//! `contracts/pacts/<consumer>-<provider>.json`, and the verification of a producer's real
//! messages against them.
//!
//! - [`consumers`]: each consumer's expectations, made from the payload types it decodes with.
//! - [`matching`]: the V4 matching rules the pacts use (`type`, `integer`, `regex`), applied to
//!   what a producer published; a mismatch names the consumer and the field.

pub mod consumers;
pub mod matching;

use serde_json::{Map, Value, json};

pub use matching::{Mismatch, Request, match_request, verify_message};

/// The V4 interaction type of a message.
pub const MESSAGE: &str = "Asynchronous/Messages";

/// The V4 interaction type of an HTTP request and its response.
pub const HTTP: &str = "Synchronous/HTTP";

/// One consumer's pact with one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Pact {
    pub consumer: String,
    pub provider: String,
    pub interactions: Vec<Value>,
}

/// A pact file that cannot be read as one.
#[derive(Debug, thiserror::Error)]
#[error("not a pact: {0}")]
pub struct NotAPact(String);

impl Pact {
    #[must_use]
    pub fn new(consumer: &str, provider: &str) -> Self {
        Self {
            consumer: consumer.into(),
            provider: provider.into(),
            interactions: Vec::new(),
        }
    }

    /// The file name under `contracts/pacts/`.
    #[must_use]
    pub fn file_name(&self) -> String {
        format!("{}-{}.json", self.consumer, self.provider)
    }

    /// The pact as a V4 file.
    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "consumer": {"name": self.consumer},
            "provider": {"name": self.provider},
            "interactions": self.interactions,
            "metadata": {"pactSpecification": {"version": "4.0"}},
        })
    }

    /// Reads a V4 pact file.
    ///
    /// # Errors
    /// [`NotAPact`] when a name or the interactions are missing.
    pub fn from_json(file: &Value) -> Result<Self, NotAPact> {
        let name = |party: &str| {
            file[party]["name"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| NotAPact(format!("no {party} name")))
        };
        Ok(Self {
            consumer: name("consumer")?,
            provider: name("provider")?,
            interactions: file["interactions"]
                .as_array()
                .cloned()
                .ok_or_else(|| NotAPact("no interactions".into()))?,
        })
    }

    /// The message interactions: each with the event type and schema version it expects.
    pub fn messages(&self) -> impl Iterator<Item = &Value> {
        self.interactions.iter().filter(|i| i["type"] == MESSAGE)
    }
}

/// What a consumer expects of one message: an example payload and how far a real one may
/// differ from it, field by field.
#[derive(Debug, Clone)]
pub struct Expectation {
    description: String,
    state: String,
    event_type: String,
    version: u32,
    content: Value,
    rules: Map<String, Value>,
}

impl Expectation {
    /// A message of event type `E` like `example`, published by a producer in `state`. Every
    /// field the example has is expected with the same JSON type (any value); an array with at
    /// least one element like its first.
    ///
    /// # Panics
    /// When `example` does not serialise (a payload type always does).
    #[must_use]
    pub fn message<E: mercato_messaging::Event>(description: &str, state: &str, example: &E) -> Self {
        let content = serde_json::to_value(example).expect("a payload serialises");
        let mut rules = Map::new();
        typed(&content, "$", &mut rules);
        Self {
            description: description.into(),
            state: state.into(),
            event_type: E::TYPE.into(),
            version: E::VERSION,
            content,
            rules,
        }
    }

    /// Narrows the field at `path` (such as `$.reason`) to strings matching `pattern`.
    #[must_use]
    pub fn matching(mut self, path: &str, pattern: &str) -> Self {
        self.rules
            .insert(path.into(), rule(json!({"match": "regex", "regex": pattern})));
        self
    }

    /// The V4 interaction.
    #[must_use]
    pub fn to_interaction(&self) -> Value {
        json!({
            "type": MESSAGE,
            "description": self.description,
            "providerStates": [{"name": self.state}],
            "contents": {"content": self.content, "contentType": "application/json", "encoded": false},
            "metadata": {
                "contentType": "application/json",
                "type": self.event_type,
                "schema_version": self.version,
            },
            "matchingRules": {"body": self.rules},
            "pending": false,
        })
    }
}

/// What an HTTP consumer sends and expects back: a JSON request, and a JSON response whose
/// fields may differ from the example's as far as `response_rules` allow.
#[derive(Debug, Clone)]
pub struct HttpExpectation {
    pub description: String,
    pub state: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub status: u16,
    pub response: Value,
    /// Body paths of the response compared by type only; the others must be equal.
    pub typed: Vec<String>,
    /// Request body paths whose value the provider's state set-up supplies (a charge's id made
    /// for the interaction), with the name of that value: `(path, name)`. The example's value
    /// stands in for it, and any string is accepted there.
    pub from_state: Vec<(String, String)>,
}

impl HttpExpectation {
    /// The V4 interaction.
    #[must_use]
    pub fn to_interaction(&self) -> Value {
        let mut headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), json!([value])))
            .collect();
        headers.insert("Content-Type".into(), json!(["application/json"]));
        let rules: Map<String, Value> = self
            .typed
            .iter()
            .map(|path| (path.clone(), rule(json!({"match": "type"}))))
            .collect();
        let request_rules: Map<String, Value> = self
            .from_state
            .iter()
            .map(|(path, _)| (path.clone(), rule(json!({"match": "type"}))))
            .collect();
        let generators: Map<String, Value> = self
            .from_state
            .iter()
            .map(|(path, name)| {
                let generator = json!({"type": "ProviderState", "expression": format!("${{{name}}}"), "dataType": "STRING"});
                (path.clone(), generator)
            })
            .collect();
        json!({
            "type": HTTP,
            "description": self.description,
            "providerStates": [{"name": self.state}],
            "request": {
                "method": self.method,
                "path": self.path,
                "headers": headers,
                "body": {"content": self.body, "contentType": "application/json", "encoded": false},
                "matchingRules": {"body": request_rules},
                "generators": {"body": generators},
            },
            "response": {
                "status": self.status,
                "headers": {"Content-Type": ["application/json"]},
                "body": {"content": self.response, "contentType": "application/json", "encoded": false},
                "matchingRules": {"body": rules},
            },
            "pending": false,
        })
    }
}

fn rule(matcher: Value) -> Value {
    json!({"combine": "AND", "matchers": [matcher]})
}

fn typed(value: &Value, path: &str, rules: &mut Map<String, Value>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                typed(field, &format!("{path}.{name}"), rules);
            }
        }
        Value::Array(items) => {
            // An empty example expects a list of anything; otherwise one element at least, each
            // like the first.
            match items.first() {
                None => rules.insert(path.into(), rule(json!({"match": "type"}))),
                Some(first) => {
                    typed(first, &format!("{path}[*]"), rules);
                    rules.insert(path.into(), rule(json!({"match": "type", "min": 1})))
                }
            };
        }
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            rules.insert(path.into(), rule(json!({"match": "integer"})));
        }
        _ => {
            rules.insert(path.into(), rule(json!({"match": "type"})));
        }
    }
}
