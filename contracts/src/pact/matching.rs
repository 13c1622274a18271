//! A produced message checked against a consumer's expectation, with the V4 matching rules the
//! pacts here use: `type` (same JSON type; on an array, at least `min` elements, each like the
//! example's first), `integer` and `regex`. A field without a rule must equal the example's; a
//! field the consumer does not expect may be there (consumers ignore what they do not read).
//! A request to a provider is held to its interaction the other way round: a body field the
//! pact does not name is a mismatch, since the provider was verified without it.

use std::fmt;

use regex::Regex;
use serde_json::{Map, Value};

use super::Pact;

/// A field of a produced message that a consumer's pact does not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub consumer: String,
    pub provider: String,
    /// The interaction's description.
    pub message: String,
    /// Where in the payload (`$.lines[0].sku`), or `metadata.<key>`.
    pub field: String,
    pub problem: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "consumer {} breaks on field {} of {}'s message \"{}\": {}",
            self.consumer, self.field, self.provider, self.message, self.problem
        )
    }
}

/// What a producer published: the envelope's type and schema version, and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Produced<'a> {
    pub event_type: &'a str,
    pub schema_version: u32,
    pub payload: &'a Value,
}

/// Checks `produced` against the message `interaction` of `pact`; empty when it passes.
#[must_use]
pub fn verify_message(pact: &Pact, interaction: &Value, produced: Produced<'_>) -> Vec<Mismatch> {
    let mut check = Check::new(&interaction["matchingRules"], false);
    let metadata = &interaction["metadata"];
    if metadata["type"] != produced.event_type {
        check.found.push((
            "metadata.type".into(),
            format!("expected {}, got {}", metadata["type"], produced.event_type),
        ));
    }
    if metadata["schema_version"] != produced.schema_version {
        check.found.push((
            "metadata.schema_version".into(),
            format!(
                "expected {}, got {}",
                metadata["schema_version"], produced.schema_version
            ),
        ));
    }
    check.compare(
        &interaction["contents"]["content"],
        produced.payload,
        "$",
        "$",
        false,
    );
    let message = interaction["description"].as_str().unwrap_or_default();
    check
        .found
        .into_iter()
        .map(|(field, problem)| Mismatch {
            consumer: pact.consumer.clone(),
            provider: pact.provider.clone(),
            message: message.into(),
            field,
            problem,
        })
        .collect()
}

/// A request a consumer sent to a provider.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Each header once, by name (any case).
    pub headers: &'a [(String, String)],
    pub body: &'a Value,
}

/// Checks `request` against the HTTP `interaction`'s request: method, path, every header the
/// pact names, and the JSON body by its matching rules. Each mismatch as `field: problem`;
/// empty when the interaction answers this request.
#[must_use]
pub fn match_request(interaction: &Value, request: Request<'_>) -> Vec<String> {
    let expected = &interaction["request"];
    let mut check = Check::new(&expected["matchingRules"], true);
    for (field, actual) in [("method", request.method), ("path", request.path)] {
        if expected[field] != actual {
            check.fail(field, format!("expected {}, got {actual}", expected[field]));
        }
    }
    for (name, values) in expected["headers"].as_object().into_iter().flatten() {
        let sent = request
            .headers
            .iter()
            .find(|(sent, _)| sent.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str());
        let wanted = values.as_array().into_iter().flatten().filter_map(Value::as_str);
        // A header's value may carry parameters (`application/json; charset=utf-8`).
        let first = |value: &str| value.split(';').next().unwrap_or_default().trim().to_owned();
        let wanted: Vec<String> = wanted.map(first).collect();
        if sent.map(first).is_none_or(|sent| !wanted.contains(&sent)) {
            check.fail(
                &format!("header {name}"),
                format!("expected {wanted:?}, got {sent:?}"),
            );
        }
    }
    check.compare(&expected["body"]["content"], request.body, "$", "$", false);
    check
        .found
        .into_iter()
        .map(|(field, problem)| format!("{field}: {problem}"))
        .collect()
}

struct Check {
    rules: Map<String, Value>,
    /// A field the example does not have is a mismatch.
    exact_fields: bool,
    found: Vec<(String, String)>,
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Check {
    fn new(matching_rules: &Value, exact_fields: bool) -> Self {
        Self {
            rules: matching_rules["body"].as_object().cloned().unwrap_or_default(),
            exact_fields,
            found: Vec::new(),
        }
    }

    /// `rule_path` is the path with array indices as `[*]`, the way rules name fields; `path`
    /// names the exact field for the report. `typed` is set under a `type` rule, which holds
    /// for everything below it.
    fn compare(&mut self, expected: &Value, actual: &Value, rule_path: &str, path: &str, typed: bool) {
        let matchers: Vec<Value> = self
            .rules
            .get(rule_path)
            .and_then(|r| r["matchers"].as_array().cloned())
            .unwrap_or_default();
        let mut typed = typed;
        for matcher in &matchers {
            match matcher["match"].as_str() {
                Some("type") => {
                    typed = true;
                    if kind(expected) != kind(actual) {
                        return self.fail(path, format!("expected {}, got {actual}", kind(expected)));
                    }
                    let min = matcher["min"].as_u64().unwrap_or(0);
                    if let Value::Array(items) = actual
                        && (items.len() as u64) < min
                    {
                        return self.fail(
                            path,
                            format!("expected at least {min} elements, got {}", items.len()),
                        );
                    }
                }
                Some("integer") => {
                    if !(actual.is_i64() || actual.is_u64()) {
                        return self.fail(path, format!("expected an integer, got {actual}"));
                    }
                    return;
                }
                Some("regex") => {
                    let pattern = matcher["regex"].as_str().unwrap_or_default();
                    let matches =
                        Regex::new(pattern).map(|re| actual.as_str().is_some_and(|s| re.is_match(s)));
                    match matches {
                        Ok(true) => return,
                        Ok(false) => {
                            return self.fail(
                                path,
                                format!("expected a string matching {pattern}, got {actual}"),
                            );
                        }
                        Err(e) => {
                            return self
                                .fail(path, format!("the pact's pattern {pattern} is not a regex: {e}"));
                        }
                    }
                }
                other => return self.fail(path, format!("unknown matcher {other:?}")),
            }
        }
        match (expected, actual) {
            (Value::Object(want), Value::Object(got)) => {
                for (name, want) in want {
                    let (rule_field, field) = (format!("{rule_path}.{name}"), format!("{path}.{name}"));
                    match got.get(name) {
                        Some(got) => self.compare(want, got, &rule_field, &field, typed),
                        None => self.fail(&field, format!("missing (expected {})", kind(want))),
                    }
                }
                if self.exact_fields {
                    for name in got.keys().filter(|name| !want.contains_key(*name)) {
                        self.fail(&format!("{path}.{name}"), "not in the pact".into());
                    }
                }
            }
            (Value::Array(want), Value::Array(got)) if typed => {
                if let Some(template) = want.first() {
                    for (i, item) in got.iter().enumerate() {
                        self.compare(
                            template,
                            item,
                            &format!("{rule_path}[*]"),
                            &format!("{path}[{i}]"),
                            typed,
                        );
                    }
                }
            }
            (Value::Array(want), Value::Array(got)) => {
                if want.len() != got.len() {
                    return self.fail(
                        path,
                        format!("expected {} elements, got {}", want.len(), got.len()),
                    );
                }
                for (i, (want, got)) in want.iter().zip(got).enumerate() {
                    self.compare(
                        want,
                        got,
                        &format!("{rule_path}[*]"),
                        &format!("{path}[{i}]"),
                        typed,
                    );
                }
            }
            (want, got) if typed => {
                if kind(want) != kind(got) {
                    self.fail(path, format!("expected {}, got {got}", kind(want)));
                }
            }
            (want, got) => {
                if want != got {
                    self.fail(path, format!("expected {want}, got {got}"));
                }
            }
        }
    }

    fn fail(&mut self, path: &str, problem: String) {
        self.found.push((path.into(), problem));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::orders::{OrderLine, ReserveStock};
    use crate::pact::Expectation;

    fn pact() -> (Pact, Value) {
        let example = ReserveStock {
            order_id: "o-1".into(),
            lines: vec![OrderLine {
                sku: "MUG-001".into(),
                quantity: 2,
            }],
            expires_at: 1_700_000_000_000,
        };
        let interaction = Expectation::message("hold the lines", "an order was placed", &example)
            .matching("$.order_id", "^o-")
            .to_interaction();
        let mut pact = Pact::new("inventory", "orders");
        pact.interactions.push(interaction.clone());
        (pact, interaction)
    }

    fn check(payload: &Value) -> Vec<String> {
        let (pact, interaction) = pact();
        let produced = Produced {
            event_type: "ReserveStock",
            schema_version: 1,
            payload,
        };
        verify_message(&pact, &interaction, produced)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn other_values_of_the_same_types_and_fields_the_consumer_ignores_pass() {
        let payload = json!({
            "order_id": "o-9", "expires_at": 5, "note": "extra",
            "lines": [{"sku": "TEE-002", "quantity": 1}, {"sku": "CAP-003", "quantity": 7}]
        });
        assert_eq!(check(&payload), Vec::<String>::new());
    }

    #[test]
    fn a_missing_renamed_or_retyped_field_names_the_consumer_and_the_field() {
        let renamed = json!({"order_id": "o-9", "expires_at": 5, "items": [{"sku": "A", "quantity": 1}]});
        assert_eq!(
            check(&renamed),
            [
                "consumer inventory breaks on field $.lines of orders's message \"hold the lines\": missing (expected an array)"
            ]
        );
        let retyped = json!({"order_id": "o-9", "expires_at": 5.5, "lines": [{"sku": "A", "quantity": "1"}]});
        let found = check(&retyped);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("field $.expires_at") && found[0].contains("expected an integer"));
        assert!(found[1].contains("field $.lines[0].quantity"));
        let empty = json!({"order_id": "o-9", "expires_at": 5, "lines": []});
        assert!(check(&empty)[0].contains("expected at least 1 elements"));
        let unmatched = json!({"order_id": "x-9", "expires_at": 5, "lines": [{"sku": "A", "quantity": 1}]});
        assert!(check(&unmatched)[0].contains("field $.order_id"));
    }

    #[test]
    fn another_type_or_version_is_a_mismatch_of_the_metadata() {
        let (pact, interaction) = pact();
        let payload = json!({"order_id": "o-9", "expires_at": 5, "lines": [{"sku": "A", "quantity": 1}]});
        let produced = Produced {
            event_type: "ReserveStock",
            schema_version: 2,
            payload: &payload,
        };
        let found = verify_message(&pact, &interaction, produced);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "metadata.schema_version");
    }

    fn refund() -> Value {
        crate::pact::consumers::all()
            .into_iter()
            .flat_map(|pact| pact.interactions)
            .find(|i| i["request"]["path"] == "/v1/refunds")
            .expect("payments' refund interaction")
    }

    fn headers(key: &str) -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json; charset=utf-8".into()),
            ("idempotency-key".into(), key.into()),
            ("x-correlation-id".into(), "anything".into()),
        ]
    }

    #[test]
    fn a_request_as_the_pact_says_matches_whatever_charge_it_names_and_extra_headers() {
        let body = json!({"charge_id": "ch_9f2c"});
        let request = Request {
            method: "POST",
            path: "/v1/refunds",
            headers: &headers("refund-contract"),
            body: &body,
        };
        assert_eq!(match_request(&refund(), request), Vec::<String>::new());
    }

    #[test]
    fn another_method_path_header_or_body_field_is_named() {
        let body = json!({"charge_id": 7, "amount_minor": 100});
        let request = Request {
            method: "PUT",
            path: "/v1/refund",
            headers: &headers("another-key"),
            body: &body,
        };
        let found = match_request(&refund(), request);
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found[0].starts_with("method: "), "{found:?}");
        assert!(found[1].starts_with("path: "), "{found:?}");
        crate::assert_found(&found, |f| f.starts_with("header Idempotency-Key: "));
        assert!(
            found.contains(&"$.amount_minor: not in the pact".to_owned()),
            "{found:?}"
        );
        crate::assert_found(&found, |f| f.starts_with("$.charge_id: expected a string"));
        let no_body = match_request(
            &refund(),
            Request {
                method: "POST",
                path: "/v1/refunds",
                headers: &[],
                body: &Value::Null,
            },
        );
        crate::assert_found(&no_body, |f| f.starts_with("header Content-Type"));
        crate::assert_found(&no_body, |f| f.starts_with("$: "));
    }
}
