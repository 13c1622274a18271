//! Bad input: every field named in a 422, unknown and read-only fields refused, no token or a
//! bad one refused with 401; nothing changes.

use mercato_testkit::backend_tests;
use mercato_testkit::problem::{expect_problem, invalid_fields};
use mercato_testkit::service::send_body;
use serde_json::json;

use crate::support::{TestApp, spawn_app, user_id};

backend_tests!(spawn_app =>
    invalid_profile_fields_are_each_named_and_nothing_changes,
    read_only_and_unknown_fields_are_refused,
    bad_preferences_are_refused,
    without_a_valid_token_the_profile_is_401,
    a_body_that_is_not_json_is_refused,
);

async fn invalid_profile_fields_are_each_named_and_nothing_changes(app: TestApp) {
    let user = user_id();
    let before = app.customer(&user).await;
    let bad = json!({
        "name": "",
        "addresses": [
            {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
            {"line1": "2 Main St", "city": "Berlin", "postal_code": "10115", "country": "Germany"},
        ],
    });
    let problem = expect_problem(app.patch_me(&user, &bad).await, 422).await;
    assert_eq!(invalid_fields(&problem), ["name", "addresses[1].country"]);

    let eleven: Vec<_> = (0..11)
        .map(|i| json!({"line1": format!("{i} Main St"), "city": "Berlin", "postal_code": "10115", "country": "DE"}))
        .collect();
    let problem = expect_problem(app.patch_me(&user, &json!({"addresses": eleven})).await, 422).await;
    assert_eq!(invalid_fields(&problem), ["addresses"]);

    let after: serde_json::Value = app.get_me(&user).await.json().await.unwrap();
    assert_eq!(after, before);
}

async fn read_only_and_unknown_fields_are_refused(app: TestApp) {
    let user = user_id();
    let before = app.customer(&user).await;
    for body in [
        json!({"email": "someone-else@example.com"}),
        json!({"id": "another-user"}),
        json!({"name": "Ada", "roles": ["admin"]}),
    ] {
        let response = app.patch_me(&user, &body).await;
        expect_problem(response, 422).await;
    }
    let after: serde_json::Value = app.get_me(&user).await.json().await.unwrap();
    assert_eq!(after, before);
}

async fn bad_preferences_are_refused(app: TestApp) {
    let user = user_id();
    app.customer(&user).await;
    let bad_locale = json!({"channels": {"email": true, "sms": false}, "marketing_opt_in": false, "locale": "not a locale!"});
    let problem = expect_problem(app.put_preferences(&user, &bad_locale).await, 422).await;
    assert_eq!(invalid_fields(&problem), ["locale"]);
    // PUT replaces the whole document: a missing field is an error, not a default.
    let partial = json!({"channels": {"email": true, "sms": false}, "locale": "en"});
    expect_problem(app.put_preferences(&user, &partial).await, 422).await;
}

async fn without_a_valid_token_the_profile_is_401(app: TestApp) {
    let user = user_id();
    app.customer(&user).await;
    let anonymous = app.get("/api/customers/me").send().await.unwrap();
    expect_problem(anonymous, 401).await;
    let forged = app.get_as("/api/customers/me", "not.a.token").await;
    expect_problem(forged, 401).await;
    let patch = app
        .http
        .patch(app.url("/api/customers/me"))
        .json(&json!({"name": "Mallory"}))
        .send()
        .await
        .unwrap();
    expect_problem(patch, 401).await;
}

async fn a_body_that_is_not_json_is_refused(app: TestApp) {
    let user = user_id();
    app.customer(&user).await;
    for (content_type, body, status) in [
        ("application/json", "{not json", 400),
        ("text/plain", "name=Ada", 415),
    ] {
        let patch = app.http.patch(app.url("/api/customers/me"));
        let response = send_body(patch.bearer_auth(app.token(&user)), content_type, body).await;
        expect_problem(response, status).await;
    }
}
