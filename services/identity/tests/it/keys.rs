use std::time::Duration;

use mercato_security::KeyStore;
use mercato_testkit::{TestBackend, backend_tests, eventually};
use serde_json::Value;

use crate::support::{PASSWORD, PATIENCE, TestApp, kid_of, spawn_app, spawn_app_with};

backend_tests!(spawn_app =>
    the_jwks_publishes_the_active_es256_key;
    after_a_rotation_new_tokens_use_the_new_key_and_old_tokens_stay_valid,
    a_rotated_key_is_published_before_it_signs,
);

async fn the_jwks_publishes_the_active_es256_key(app: TestApp) {
    let response = app.get("/.well-known/jwks.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=60");
    let jwks: Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let key = &keys[0];
    assert_eq!(key["kty"], "EC", "{jwks}");
    assert_eq!(key["crv"], "P-256", "{jwks}");
    assert_eq!(key["alg"], "ES256", "{jwks}");
    assert_eq!(key["use"], "sig", "{jwks}");
    assert!(key["x"].is_string() && key["y"].is_string(), "{jwks}");
    assert!(key.get("d").is_none(), "never the private key: {jwks}");

    let tokens = app.customer("ada@example.com").await;
    assert_eq!(key["kid"], kid_of(&tokens.access).as_str());
}

async fn after_a_rotation_new_tokens_use_the_new_key_and_old_tokens_stay_valid(backend: TestBackend) {
    let app = spawn_app_with(backend, |identity| identity.key_reload_interval_secs = 1).await;
    let before = app.customer("ada@example.com").await;
    let old_kid = kid_of(&before.access);

    let new_kid = rotate(&app, &old_kid, Duration::ZERO);

    let after = eventually(PATIENCE, "tokens signed with the rotated key", || async {
        let tokens = app.login("ada@example.com", PASSWORD).await;
        (kid_of(&tokens.access) == new_kid).then_some(tokens)
    })
    .await;

    let mut kids = app.published_kids().await;
    kids.sort();
    let mut expected = vec![old_kid, new_kid];
    expected.sort();
    assert_eq!(kids, expected, "the JWKS lists the new key and the retired one");

    for token in [&before.access, &after.access] {
        assert_eq!(app.me(token).await.status(), 200, "a token of either key works");
    }
}

async fn a_rotated_key_is_published_before_it_signs(backend: TestBackend) {
    let app = spawn_app_with(backend, |identity| identity.key_reload_interval_secs = 1).await;
    let before = app.customer("ada@example.com").await;
    let old_kid = kid_of(&before.access);
    let new_kid = rotate(&app, &old_kid, Duration::from_secs(3600));

    eventually(PATIENCE, "the JWKS to list the rotated key", || async {
        app.published_kids().await.contains(&new_kid).then_some(())
    })
    .await;
    let tokens = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(
        kid_of(&tokens.access),
        old_kid,
        "the old key signs until the new one activates"
    );
}

/// Rotates the service's key directory as an operator would, the new key signing after
/// `activation_delay`, and returns the new key's kid.
fn rotate(app: &TestApp, old_kid: &str, activation_delay: Duration) -> String {
    let store = KeyStore::new(
        &app.config.identity.keys_dir,
        Duration::from_secs(app.config.identity.access_token_ttl_secs),
    )
    .with_activation_delay(activation_delay);
    let ring = store.rotate().unwrap();
    ring.published
        .keys
        .iter()
        .filter_map(|k| k.kid.clone())
        .find(|kid| kid != old_kid)
        .expect("the rotation adds a key")
}
