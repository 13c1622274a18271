//! The customers service end to end: a profile appears after registration (identity → outbox →
//! bus → inbox → event store → projection), and a customer reads and changes only their own.

use mercato_testkit::backend_tests;
use mercato_testkit::problem::invalid_fields;
use mercato_testkit::service::json_answer;
use serde_json::{Value, json};

use crate::support::{Started, problem, started, unique_email};
use reqwest::Method;

backend_tests!(started =>
    registering_creates_a_customer_profile_readable_through_the_gateway,
    a_customer_updates_their_profile_and_preferences_and_reads_them_back,
    bad_profile_changes_are_problems_naming_the_field,
    a_customer_only_ever_sees_their_own_profile,
);

async fn registering_creates_a_customer_profile_readable_through_the_gateway((_db, system): Started) {
    let email = unique_email();
    let token = system.customer(&email).await;
    let me: Value = system.get_json("/api/customers/me", &token).await;
    assert_eq!(me["email"], email.as_str());
    assert_eq!(me["name"], "Ada");
    assert_eq!(me["addresses"], json!([]));
    let prefs: Value = system.get_json("/api/customers/me/preferences", &token).await;
    assert_eq!(
        prefs,
        json!({"channels": {"email": true, "sms": false}, "marketing_opt_in": false, "locale": "en"})
    );
    system.stop().await;
}

async fn a_customer_updates_their_profile_and_preferences_and_reads_them_back((_db, system): Started) {
    let token = system.customer(&unique_email()).await;
    let address = json!({"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "de"});
    let patched = system
        .send_json(
            Method::PATCH,
            "/api/customers/me",
            &token,
            &json!({"name": "Ada Lovelace", "addresses": [address]}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["name"], "Ada Lovelace");
    assert_eq!(patched["addresses"][0]["country"], "DE");

    // Read your own write: the GET right after the PATCH sees it.
    let me: Value = system.get_json("/api/customers/me", &token).await;
    assert_eq!(me["name"], "Ada Lovelace");
    assert_eq!(me["addresses"][0]["city"], "Berlin");

    let prefs =
        json!({"channels": {"email": false, "sms": true}, "marketing_opt_in": true, "locale": "de-DE"});
    system
        .put_ok("/api/customers/me/preferences", &token, &prefs)
        .await;
    let read: Value = system.get_json("/api/customers/me/preferences", &token).await;
    assert_eq!(read, prefs);
    let me: Value = system.get_json("/api/customers/me", &token).await;
    assert_eq!(
        me["name"], "Ada Lovelace",
        "changing preferences keeps the profile"
    );
    system.stop().await;
}

async fn bad_profile_changes_are_problems_naming_the_field((_db, system): Started) {
    let token = system.customer(&unique_email()).await;
    let patch = |body: Value| {
        let request = system
            .http
            .patch(system.url("/api/customers/me"))
            .bearer_auth(&token)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"email": "evil@example.com"}), "body"),
        (json!({"id": "someone-else"}), "body"),
        (
            json!({"addresses": [{"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "Germany"}]}),
            "addresses[0].country",
        ),
        (json!({"addresses": [{"line1": "x"}]}), "addresses[0].city"),
    ];
    for (body, field) in cases {
        let response = patch(body.clone()).await;
        let problem = problem(response, 422).await;
        assert!(
            invalid_fields(&problem)
                .iter()
                .any(|n| *n == field || (field == "body" && !n.is_empty())),
            "{body} should name {field}: {problem}"
        );
    }
    let bad_locale =
        json!({"channels": {"email": true, "sms": false}, "marketing_opt_in": false, "locale": "english"});
    let response = system
        .send_json(Method::PUT, "/api/customers/me/preferences", &token, &bad_locale)
        .await;
    assert_eq!(problem(response, 422).await["errors"][0]["field"], "locale");
    let without_channels = json!({"locale": "en"});
    let missing = system
        .send_json(
            Method::PUT,
            "/api/customers/me/preferences",
            &token,
            &without_channels,
        )
        .await;
    problem(missing, 422).await;
    let anonymous = system
        .send_anonymous(Method::GET, "/api/customers/me", None)
        .await;
    problem(anonymous, 401).await;
    system.stop().await;
}

async fn a_customer_only_ever_sees_their_own_profile((_db, system): Started) {
    let (ada, bob) = (unique_email(), unique_email());
    let ada_token = system.customer(&ada).await;
    let bob_token = system.customer(&bob).await;
    let rename = json!({"name": "Bob"});
    let renamed = system
        .send_json(Method::PATCH, "/api/customers/me", &bob_token, &rename)
        .await;
    assert_eq!(renamed.status(), 200);
    let me: Value = system.get_json("/api/customers/me", &ada_token).await;
    assert_eq!(me["email"], ada.as_str());
    assert_eq!(me["name"], "Ada", "bob's change did not touch ada's profile");
    // A forged identity header changes nothing: the gateway strips it, the service checks the token.
    let request = system.http.get(system.url("/api/customers/me"));
    let spoofed = json_answer(
        request
            .bearer_auth(&ada_token)
            .header("x-auth-subject", "someone-else"),
    )
    .await;
    assert_eq!(spoofed["email"], ada.as_str());
    system.stop().await;
}
