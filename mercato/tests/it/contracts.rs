//! The contracts between services against what the services really publish: the system runs a
//! registration, a change of preferences, a stock change, and orders that are confirmed,
//! shipped and delivered, declined, out of stock, and charged too late; every event it
//! publishes must fit its type's committed JSON Schema, and every message in the committed
//! pacts must be met by each real message of its type.

use std::collections::BTreeSet;

use mercato_contracts::catalogue;
use mercato_contracts::files;
use mercato_contracts::pact::matching::Produced;
use mercato_contracts::pact::{Mismatch, Pact, verify_message};
use mercato_messaging::Envelope;
use mercato_testkit::TestBackend;
use mercato_testkit::listener::Listener;
use reqwest::Method;
use serde_json::{Value, json};

use crate::checkout::{order_body, placed_and_settled};
use crate::support::{PATIENCE, started, unique_email};

const SKU: &str = "MUG-001";

/// Every mismatch between the committed pacts and the `published` events.
fn verify(pacts: &[Pact], published: &[Envelope]) -> Vec<Mismatch> {
    let mut found = Vec::new();
    for pact in pacts {
        for message in pact.messages() {
            let wanted = message["metadata"]["type"].as_str().unwrap_or_default();
            let mut real = published
                .iter()
                .filter(|e| e.source == pact.provider && e.event_type == wanted)
                .peekable();
            assert!(
                real.peek().is_some(),
                "{} published no {wanted} for {}",
                pact.provider,
                pact.consumer
            );
            for envelope in real {
                let produced = Produced {
                    event_type: &envelope.event_type,
                    schema_version: envelope.schema_version,
                    payload: &envelope.payload,
                };
                found.extend(verify_message(pact, message, produced));
            }
        }
    }
    found
}

/// Reads every listener until each event type of the catalogue has been seen.
async fn every_type_published(listeners: &mut [Listener]) -> Vec<Envelope> {
    let all: BTreeSet<String> = catalogue::all().iter().map(|e| e.name.to_owned()).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let seen: BTreeSet<String> = listeners
            .iter()
            .flat_map(|l| l.seen.iter().map(|e| e.event_type.clone()))
            .collect();
        let missing: Vec<_> = all.difference(&seen).collect();
        if missing.is_empty() {
            return listeners.iter().flat_map(|l| l.seen.clone()).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never published: {missing:?}"
        );
        for listener in listeners.iter_mut() {
            listener.read(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn every_published_event_fits_its_schema_and_every_consumers_pact() {
    let (fixture, system) = started(TestBackend::Sqlite).await;
    let bus = fixture.backing.bus().await;
    let mut listeners = Vec::new();
    for category in ["identity", "customers", "orders", "inventory", "payments"] {
        listeners.push(Listener::join(&bus, "contract-test", category).await);
    }

    let token = system.customer(&unique_email()).await;
    let preferences =
        json!({"channels": {"email": true, "sms": true}, "marketing_opt_in": false, "locale": "de-DE"});
    system
        .put_ok("/api/customers/me/preferences", &token, &preferences)
        .await;
    let admin = system.admin().await;
    system.set_stock(&admin, SKU, 50).await;

    let confirmed = placed_and_settled(&system, &token, &order_body(SKU, 2, "tok_visa")).await;
    assert_eq!(confirmed["status"], "confirmed", "{confirmed}");
    let id = confirmed["id"].as_str().unwrap();
    for step in ["ship", "deliver"] {
        let response = system
            .send(Method::POST, &format!("/api/orders/{id}/{step}"), &admin)
            .await;
        assert_eq!(response.status(), 200, "{step}");
    }
    let declined = placed_and_settled(&system, &token, &order_body(SKU, 1, "tok_decline")).await;
    assert_eq!(declined["cancel_reason"], "payment_declined", "{declined}");
    let too_many = placed_and_settled(&system, &token, &order_body(SKU, 100, "tok_visa")).await;
    assert_eq!(too_many["cancel_reason"], "out_of_stock", "{too_many}");
    // Charged after the saga gave up: refunded.
    let late = placed_and_settled(&system, &token, &order_body(SKU, 1, "tok_late")).await;
    assert_eq!(late["cancel_reason"], "payment_timeout", "{late}");

    let published = every_type_published(&mut listeners).await;

    for envelope in &published {
        let event = catalogue::find(&envelope.source, &envelope.event_type)
            .unwrap_or_else(|| panic!("{} has no schema for {}", envelope.source, envelope.event_type));
        assert_eq!(envelope.schema_version, event.version, "{}", event.name);
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(files::source_dir().join(event.path())).unwrap())
                .unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&envelope.payload)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{} {}: {errors:?}",
            event.name,
            envelope.payload
        );
    }

    let pacts = files::pacts(&files::source_dir()).unwrap();
    let mismatches: Vec<String> = verify(&pacts, &published)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");

    // The same verification fails, naming the consumer and the field, once a producer renames
    // a field a consumer reads.
    let mut renamed = published.clone();
    for envelope in renamed.iter_mut().filter(|e| e.event_type == "ReserveStock") {
        let payload = envelope.payload.as_object_mut().unwrap();
        let lines = payload.remove("lines").unwrap();
        payload.insert("items".into(), lines);
    }
    let broken: Vec<String> = verify(&pacts, &renamed).iter().map(ToString::to_string).collect();
    assert!(!broken.is_empty());
    for mismatch in &broken {
        assert!(
            mismatch.starts_with("consumer inventory breaks on field $.lines of orders's message"),
            "{mismatch}"
        );
    }
    system.stop().await;
}
