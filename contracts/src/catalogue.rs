//! Every event type the services publish, by category, with its JSON Schema (2020-12) generated
//! from the payload type: the derive reads the same serde attributes the wire format follows, so
//! an optional field is optional in the schema and an enum lists its wire names.
//!
//! `contracts/events/<category>/<Type>.v<version>.json` holds each current version's schema;
//! an older version's file stays as it was, for the upcaster that reads it.

use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

use mercato_messaging::Event;

/// One event type at its current schema version.
#[derive(Debug, Clone, Copy)]
pub struct EventType {
    /// The bus category, which is also the publishing service.
    pub category: &'static str,
    pub name: &'static str,
    pub version: u32,
    schema: fn(&str) -> Value,
}

impl EventType {
    fn of<E: Event + ToSchema>(category: &'static str) -> Self {
        Self {
            category,
            name: E::TYPE,
            version: E::VERSION,
            schema: schema_of::<E>,
        }
    }

    /// The JSON Schema a payload of this type and version satisfies.
    #[must_use]
    pub fn schema(&self) -> Value {
        (self.schema)(self.category)
    }

    /// Where the schema is kept, relative to `contracts/`.
    #[must_use]
    pub fn path(&self) -> String {
        schema_path(self.category, self.name, self.version)
    }
}

/// Where the schema of `name` at `version` is kept, relative to `contracts/`.
#[must_use]
pub fn schema_path(category: &str, name: &str, version: u32) -> String {
    format!("events/{category}/{name}.v{version}.json")
}

/// Every event type, by category.
#[must_use]
pub fn all() -> Vec<EventType> {
    use crate::{customers as c, identity as id, inventory as inv, orders as o, payments as p};
    vec![
        EventType::of::<id::UserRegistered>(id::CATEGORY),
        EventType::of::<c::CustomerCreated>(c::CATEGORY),
        EventType::of::<c::CustomerUpdated>(c::CATEGORY),
        EventType::of::<o::OrderPlaced>(o::CATEGORY),
        EventType::of::<o::ReserveStock>(o::CATEGORY),
        EventType::of::<o::ChargePayment>(o::CATEGORY),
        EventType::of::<o::CommitReservation>(o::CATEGORY),
        EventType::of::<o::ReleaseStock>(o::CATEGORY),
        EventType::of::<o::RefundPayment>(o::CATEGORY),
        EventType::of::<o::OrderConfirmed>(o::CATEGORY),
        EventType::of::<o::OrderCancelled>(o::CATEGORY),
        EventType::of::<o::OrderShipped>(o::CATEGORY),
        EventType::of::<o::OrderDelivered>(o::CATEGORY),
        // The saga's log is the order's stream: the answers it acted on are recorded there, and
        // published with it, as they came.
        EventType::of::<inv::StockReserved>(o::CATEGORY),
        EventType::of::<inv::StockReservationFailed>(o::CATEGORY),
        EventType::of::<p::PaymentCaptured>(o::CATEGORY),
        EventType::of::<p::PaymentFailed>(o::CATEGORY),
        EventType::of::<inv::StockReserved>(inv::CATEGORY),
        EventType::of::<inv::StockReservationFailed>(inv::CATEGORY),
        EventType::of::<inv::StockReleased>(inv::CATEGORY),
        EventType::of::<inv::ReservationCommitted>(inv::CATEGORY),
        EventType::of::<inv::ProductChanged>(inv::CATEGORY),
        EventType::of::<p::PaymentCaptured>(p::CATEGORY),
        EventType::of::<p::PaymentFailed>(p::CATEGORY),
        EventType::of::<p::PaymentRefunded>(p::CATEGORY),
    ]
}

/// The event type `name` published in `category`.
#[must_use]
pub fn find(category: &str, name: &str) -> Option<EventType> {
    all()
        .into_iter()
        .find(|e| e.category == category && e.name == name)
}

const DEFS: &str = "#/$defs/";
const COMPONENTS: &str = "#/components/schemas/";

fn schema_of<E: Event + ToSchema>(category: &str) -> Value {
    let mut defs: Vec<(String, RefOr<Schema>)> = Vec::new();
    E::schemas(&mut defs);
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:mercato:event:{category}:{}:v{}", E::TYPE, E::VERSION),
        "title": E::TYPE,
    });
    let object = root.as_object_mut().expect("a JSON object");
    if let Value::Object(body) = to_json(&E::schema()) {
        object.extend(body);
    }
    if !defs.is_empty() {
        let defs: Map<String, Value> = defs.iter().map(|(name, s)| (name.clone(), to_json(s))).collect();
        object.insert("$defs".into(), Value::Object(defs));
    }
    root
}

/// A schema as standalone JSON Schema: references point into `$defs`, and an object admits no
/// property it does not name, so a producer cannot publish a field no schema declares (readers
/// stay tolerant: serde ignores fields it does not know).
fn to_json(schema: &RefOr<Schema>) -> Value {
    let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
    standalone(&mut value);
    value
}

fn standalone(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix(COMPONENTS)
            {
                *r = format!("{DEFS}{name}");
            }
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(standalone);
        }
        Value::Array(items) => items.iter_mut().for_each(standalone),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator(event: &EventType) -> jsonschema::Validator {
        jsonschema::validator_for(&event.schema()).expect("a valid JSON Schema")
    }

    fn errors(event: &EventType, payload: &Value) -> Vec<String> {
        validator(event)
            .iter_errors(payload)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn every_event_type_is_listed_once_with_a_schema_of_its_own() {
        let all = all();
        let mut paths: Vec<_> = all.iter().map(EventType::path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), all.len());
        for event in &all {
            assert!(jsonschema::meta::is_valid(&event.schema()), "{}", event.name);
        }
    }

    #[test]
    fn a_schema_refuses_a_missing_field_a_wrong_type_an_unknown_field_and_a_wrong_enum() {
        let reserve = find("orders", "ReserveStock").unwrap();
        let good = json!({"order_id": "o-1", "lines": [{"sku": "MUG-001", "quantity": 2}], "expires_at": 1});
        assert_eq!(errors(&reserve, &good), Vec::<String>::new());
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("expires_at");
        assert_eq!(
            errors(&reserve, &missing).len(),
            1,
            "{:?}",
            errors(&reserve, &missing)
        );
        let mut wrong = good.clone();
        wrong["lines"][0]["quantity"] = json!("2");
        assert_eq!(
            errors(&reserve, &wrong),
            ["/lines/0/quantity: \"2\" is not of type \"integer\""]
        );
        let mut extra = good;
        extra["lines"][0]["colour"] = json!("red");
        assert_eq!(
            errors(&reserve, &extra).len(),
            1,
            "an undeclared field is refused"
        );

        let failed = find("payments", "PaymentFailed").unwrap();
        assert!(errors(&failed, &json!({"order_id": "o-1", "reason": "declined"})).is_empty());
        assert!(!errors(&failed, &json!({"order_id": "o-1", "reason": "Declined"})).is_empty());
    }

    #[test]
    fn money_and_optional_fields_follow_the_wire_format() {
        let captured = find("payments", "PaymentCaptured").unwrap();
        let money = json!({"amount_minor": 1999, "currency": "EUR"});
        let payload = json!({"order_id": "o", "payment_id": "p", "amount": money});
        assert!(errors(&captured, &payload).is_empty());
        let mut lower = payload;
        lower["amount"]["currency"] = json!("eur");
        assert!(!errors(&captured, &lower).is_empty());

        let updated = find("customers", "CustomerUpdated").unwrap();
        let address =
            json!({"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"});
        let payload = json!({
            "customer_id": "c", "email": "a@example.com", "name": "Ada", "addresses": [address],
            "preferences": {"email": true, "sms": false, "marketing_opt_in": false, "locale": "en"}
        });
        assert_eq!(
            errors(&updated, &payload),
            Vec::<String>::new(),
            "line2 may be left out"
        );
    }
}
