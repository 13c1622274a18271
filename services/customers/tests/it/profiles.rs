//! Profiles: created once from identity's `UserRegistered`, read and changed by their owner,
//! and every change published as `CustomerUpdated`.

use mercato_contracts::customers::{CustomerCreated, CustomerUpdated};
use mercato_testkit::{PATIENCE, backend_tests, eventually};
use serde_json::json;

use crate::support::{TestApp, spawn_app, user_id};

backend_tests!(spawn_app =>
    a_registration_creates_the_profile_and_publishes_customer_created,
    a_registration_delivered_twice_creates_one_profile,
    before_the_registration_arrives_the_profile_is_404,
    the_owner_changes_name_and_addresses_and_an_update_is_published,
    an_unchanged_profile_publishes_nothing_new,
);

async fn a_registration_creates_the_profile_and_publishes_customer_created(app: TestApp) {
    let mut published = app.published().await;
    let user = user_id();
    let profile = app.customer(&user).await;
    assert_eq!(profile["id"], user);
    assert_eq!(profile["email"], format!("{user}@example.com"));
    assert_eq!(profile["name"], "Ada Lovelace");
    assert_eq!(profile["addresses"], json!([]));

    let (envelope, created) = published.first::<CustomerCreated>(&user).await;
    assert_eq!(envelope.source, "customers");
    assert_eq!(envelope.stream_seq, 1);
    assert_eq!(created.customer_id, user);
    assert_eq!(created.email, format!("{user}@example.com"));
}

async fn a_registration_delivered_twice_creates_one_profile(app: TestApp) {
    let mut published = app.published().await;
    let user = user_id();
    let first = app.user_registered(&user, "twice@example.com", "Twice").await;
    // The same event again, as a relay that crashed before marking it would send it.
    app.bus.publish(&first).await.expect("publish again");
    app.wait_for_profile(&user).await;
    // A later, different event on another stream marks a point the inbox has certainly passed.
    let marker = user_id();
    app.customer(&marker).await;
    published.first::<CustomerCreated>(&marker).await;
    let created: Vec<_> = published
        .seen
        .iter()
        .filter(|e| e.stream_id == user && e.is::<CustomerCreated>())
        .collect();
    assert_eq!(created.len(), 1, "one CustomerCreated for one registration");
}

async fn before_the_registration_arrives_the_profile_is_404(app: TestApp) {
    let response = app.get_me(&user_id()).await;
    let problem = mercato_testkit::problem::expect_problem(response, 404).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("shortly after registration")
    );
}

async fn the_owner_changes_name_and_addresses_and_an_update_is_published(app: TestApp) {
    let mut published = app.published().await;
    let user = user_id();
    app.customer(&user).await;
    let change = json!({
        "name": "Ada King",
        "addresses": [{"line1": "12 St James Sq", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}],
    });
    let response = app.patch_me(&user, &change).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["name"], "Ada King");
    assert_eq!(body["addresses"][0]["city"], "London");
    assert_eq!(
        body["addresses"][0].get("line2"),
        None,
        "an absent line2 stays absent"
    );

    // The owner reads their own write at once.
    let again: serde_json::Value = app.get_me(&user).await.json().await.unwrap();
    assert_eq!(again, body);

    let (envelope, updated) = published.first::<CustomerUpdated>(&user).await;
    assert_eq!(
        envelope.stream_seq, 2,
        "after CustomerCreated on the customer's stream"
    );
    assert_eq!(updated.name, "Ada King");
    assert_eq!(updated.addresses.len(), 1);
    assert_eq!(updated.addresses[0].country, "GB");

    // Only the name: the addresses are kept.
    let response = app.patch_me(&user, &json!({"name": "Ada"})).await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["name"], "Ada");
    assert_eq!(body["addresses"][0]["city"], "London");
}

async fn an_unchanged_profile_publishes_nothing_new(app: TestApp) {
    let mut published = app.published().await;
    let user = user_id();
    app.customer(&user).await;
    let same = app.patch_me(&user, &json!({"name": "Ada Lovelace"})).await;
    assert_eq!(same.status(), 200);
    let changed = app.patch_me(&user, &json!({"name": "Ada L."})).await;
    assert_eq!(changed.status(), 200);
    let (envelope, updated) = published.first::<CustomerUpdated>(&user).await;
    assert_eq!(
        updated.name, "Ada L.",
        "the no-op wrote no event before the real change"
    );
    assert_eq!(envelope.stream_seq, 2);
    eventually(PATIENCE, "the read model to show the change", || async {
        let body: serde_json::Value = app.get_me(&user).await.json().await.ok()?;
        (body["name"] == "Ada L.").then_some(())
    })
    .await;
}
