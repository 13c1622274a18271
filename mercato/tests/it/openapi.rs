//! The public OpenAPI document: the one the gateway serves is the one generated from the
//! handlers, and what it leaves out (a method a path does not declare) answers 405 with Allow.

use mercato_testkit::TestBackend;
use reqwest::Method;
use serde_json::Value;

use crate::support;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::PATCH,
];

fn generated() -> Value {
    serde_json::to_value(mercato::openapi::document()).unwrap()
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(mercato::openapi::SERVED);
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == mercato::openapi::render(),
        "{} differs from the generated document; run `cargo run -p mercato -- openapi`",
        mercato::openapi::SERVED
    );
}

#[test]
fn every_operation_is_described_with_its_shared_answers() {
    let doc = generated();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["scheme"], "bearer");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let id = &op["operationId"];
            assert!(id.is_string(), "{method} {path} has no operationId");
            let answers = op["responses"].as_object().unwrap();
            for status in ["429", "503", "504"] {
                assert!(answers.contains_key(status), "{method} {path} lacks {status}");
            }
            assert!(
                answers["429"]["headers"]["Retry-After"].is_object(),
                "{method} {path}: 429 without Retry-After"
            );
            if op.get("security").is_some() {
                assert!(
                    answers.contains_key("401"),
                    "{method} {path} is secured and lacks 401"
                );
            }
            for (status, answer) in answers {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        answer["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert_eq!(operations, 21, "one operation per route of the services");
    let link = &doc["paths"]["/api/orders"]["post"]["responses"]["201"]["links"]["GetOrder"];
    assert_eq!(link["operationId"], "get_order");
    assert_eq!(link["parameters"]["id"], "$response.body#/id");
}

#[test]
fn no_two_services_name_different_schemas_alike() {
    // Merging keeps one schema per name: two services must not both say `Page` for two shapes.
    let mut seen: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
    for part in mercato::openapi::parts() {
        let part = serde_json::to_value(part).unwrap();
        for (name, schema) in part["components"]["schemas"].as_object().into_iter().flatten() {
            if let Some(earlier) = seen.insert(name.clone(), schema.clone()) {
                assert_eq!(
                    &earlier, schema,
                    "two services define the schema {name} differently"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_gateway_serves_the_generated_document_and_answers_405_with_allow_for_the_rest() {
    let (_fixture, system) = support::started(TestBackend::Sqlite).await;
    let served: Value = system.get_public("/api/openapi.json").await;
    assert_eq!(served, generated(), "the gateway serves another document");

    // A customer too: the gateway's admin rules must not answer 403 for a method nobody has.
    let tokens = [
        system.admin().await,
        system.customer(&support::unique_email()).await,
    ];
    for (path, item) in served["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "no-such-order")
            .replace("{order_id}", "no-such-order")
            .replace("{sku}", "MUG-001");
        let declared: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let undeclared = METHODS.iter().filter(|m| !declared.contains(&m.to_string()));
        for (method, token) in undeclared.flat_map(|m| tokens.iter().map(move |t| (m, t))) {
            let response = system.send(method.clone(), &concrete, token).await;
            assert_eq!(response.status(), 405, "{method} {concrete}");
            let allow = response
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{method} {concrete}: 405 without Allow"))
                .to_str()
                .unwrap()
                .to_owned();
            for m in &declared {
                assert!(
                    allow.contains(m.as_str()),
                    "{method} {concrete}: Allow {allow:?} lacks {m}"
                );
            }
        }
    }
    system.stop().await;
}
