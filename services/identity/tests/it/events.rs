//! What identity tells the rest of the system: `UserRegistered`, through the outbox and the bus.

use std::time::Duration;

use mercato_contracts::identity::UserRegistered;
use mercato_messaging::ConsumerSpec;
use mercato_testkit::backend_tests;
use serde_json::json;

use crate::support::{PATIENCE, TestApp, spawn_app};

backend_tests!(spawn_app =>
    a_registration_is_published_once_as_user_registered,
    a_refused_registration_publishes_nothing,
);

async fn a_registration_is_published_once_as_user_registered(app: TestApp) {
    let user = app.register_user("Ada@Example.com", "Ada").await;
    let id = user["id"].as_str().unwrap().to_owned();

    let spec = ConsumerSpec {
        group: "identity-it".into(),
        category: "identity".into(),
        event_types: Vec::new(),
    };
    let mut consumer = app.bus.consumer(&spec).await.unwrap();
    let deliveries = consumer.fetch(10, PATIENCE).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    let envelope = &deliveries[0].envelope;
    assert_eq!(envelope.source, "identity");
    assert_eq!(envelope.stream_id, id);
    assert_eq!(envelope.stream_seq, 1);
    let event: UserRegistered = envelope.decode().unwrap();
    assert_eq!(
        event,
        UserRegistered {
            user_id: id,
            email: "ada@example.com".into(),
            name: "Ada".into()
        }
    );
    for d in deliveries {
        d.ack().await.unwrap();
    }
    let more = consumer.fetch(10, Duration::from_millis(300)).await.unwrap();
    assert!(more.is_empty(), "published exactly once: {more:?}");
}

async fn a_refused_registration_publishes_nothing(app: TestApp) {
    app.register_user("ada@example.com", "Ada").await;
    let duplicate = json!({"email": "ADA@example.com", "password": "correct horse", "name": "Ada"});
    assert_eq!(app.register(&duplicate).await.status(), 409);
    let invalid = json!({"email": "not-an-email", "password": "correct horse", "name": "Ada"});
    assert_eq!(app.register(&invalid).await.status(), 422);
    let spec = ConsumerSpec {
        group: "identity-it".into(),
        category: "identity".into(),
        event_types: Vec::new(),
    };
    let mut consumer = app.bus.consumer(&spec).await.unwrap();
    let mut seen = 0;
    loop {
        let batch = consumer.fetch(10, Duration::from_millis(500)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        seen += batch.len();
        for d in batch {
            d.ack().await.unwrap();
        }
    }
    assert_eq!(seen, 1, "only the accepted registration is an event");
}
