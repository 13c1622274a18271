//! What must survive a restart, and a key rotation seen through the gateway.

use mercato_testkit::json::field_of_each;
use mercato_testkit::{TestBackend, backend_tests, eventually};
use serde_json::Value;

use crate::support::{PATIENCE, System, access_token, fresh, kid_of, login, register, unique_email};

backend_tests!(
    users_and_signing_keys_survive_a_restart,
    a_rotated_key_signs_new_tokens_while_old_tokens_stay_valid_through_the_gateway,
);

async fn users_and_signing_keys_survive_a_restart(backend: TestBackend) {
    let (_db, config) = fresh(backend).await;
    let email = unique_email();

    let system = System::start(config.clone()).await;
    assert_eq!(
        register(&system.http, &system.gateway, &email).await.status(),
        201
    );
    let before = access_token(&login(&system.http, &system.gateway, &email).await);
    system.stop().await;

    let system = System::start(config).await;
    let after = access_token(&login(&system.http, &system.gateway, &email).await);
    assert_eq!(
        kid_of(&after),
        kid_of(&before),
        "the same persisted key signs after the restart"
    );
    assert_eq!(
        system.get_status("/api/identity/me", &before).await,
        200,
        "a token from before the restart is still valid"
    );
    assert_eq!(system.get_status("/api/identity/me", &after).await, 200);
    system.stop().await;
}

async fn a_rotated_key_signs_new_tokens_while_old_tokens_stay_valid_through_the_gateway(
    backend: TestBackend,
) {
    let (_db, config) = fresh(backend).await;
    let system = System::start(config.clone()).await;
    let email = unique_email();
    register(&system.http, &system.gateway, &email).await;
    let old = access_token(&login(&system.http, &system.gateway, &email).await);
    assert_eq!(
        system.get_status("/api/identity/me", &old).await,
        200,
        "the gateway has fetched the first key"
    );

    // What `mercato keys rotate` does.
    let ring = config.identity.key_store().rotate().unwrap();
    let rotated = ring.published.keys[0].kid.clone().unwrap();
    assert_ne!(rotated, kid_of(&old));
    let new = eventually(PATIENCE, "identity to sign with the rotated key", || async {
        let token = access_token(&login(&system.http, &system.gateway, &email).await);
        (kid_of(&token) == rotated).then_some(token)
    })
    .await;

    // The gateway has never seen the new kid: it must fetch the JWKS again rather than refuse.
    assert_eq!(system.get_status("/api/identity/me", &new).await, 200);
    assert_eq!(system.get_status("/api/identity/me", &old).await, 200);
    let jwks: Value = system.get_public("/.well-known/jwks.json").await;
    let kids = field_of_each(&jwks["keys"], "kid");
    assert!(
        kids.contains(&kid_of(&old).as_str()) && kids.contains(&rotated.as_str()),
        "{kids:?}"
    );
    system.stop().await;
}
