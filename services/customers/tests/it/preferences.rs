//! Communication preferences: defaults, replacement as a whole, and the event that carries them.

use mercato_contracts::customers::CustomerUpdated;
use mercato_testkit::backend_tests;
use serde_json::json;

use crate::support::{TestApp, spawn_app, user_id};

backend_tests!(spawn_app =>
    a_new_customer_has_the_default_preferences,
    put_replaces_the_preferences_and_publishes_them,
);

async fn a_new_customer_has_the_default_preferences(app: TestApp) {
    let user = user_id();
    app.customer(&user).await;
    let response = app.get_preferences(&user).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"channels": {"email": true, "sms": false}, "marketing_opt_in": false, "locale": "en"})
    );
}

async fn put_replaces_the_preferences_and_publishes_them(app: TestApp) {
    let mut published = app.published().await;
    let user = user_id();
    app.customer(&user).await;
    let wanted =
        json!({"channels": {"email": false, "sms": true}, "marketing_opt_in": true, "locale": "pt-BR"});
    let response = app.put_preferences(&user, &wanted).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, wanted);
    let read: serde_json::Value = app.get_preferences(&user).await.json().await.unwrap();
    assert_eq!(read, wanted);

    let (_, updated) = published.first::<CustomerUpdated>(&user).await;
    assert!(!updated.preferences.email);
    assert!(updated.preferences.sms);
    assert!(updated.preferences.marketing_opt_in);
    assert_eq!(updated.preferences.locale, "pt-BR");
}
