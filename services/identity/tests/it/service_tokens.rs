//! The `client_credentials` grant against the real token endpoint, and the runtime's token cache
//! (`ServiceTokens`) fetching from it.

use std::sync::Arc;
use std::time::Duration;

use mercato_identity::Config;
use mercato_runtime::service_token::ServiceTokens;
use mercato_security::service_token::{
    ASSERTION_TYPE, ClientCredential, client_credential, ensure_client_key, sign_assertion,
};
use mercato_security::{JwksClient, JwksClientConfig, SigningKey, TokenError, Verifier, VerifierConfig};
use mercato_testkit::{TestBackend, backend_tests, eventually};
use serde_json::Value;

use crate::support::{
    PATIENCE, TestApp, expect_oauth_error, expect_oauth_error_status, jwt_part, spawn_configured,
};

backend_tests!(
    a_service_with_its_key_gets_a_short_lived_token_for_the_callee_it_asked_for,
    a_service_with_its_secret_file_gets_a_token_and_a_wrong_secret_none,
    an_assertion_signed_by_another_key_is_an_invalid_client,
    an_expired_assertion_is_an_invalid_client,
    a_replayed_assertion_is_an_invalid_client,
    a_malformed_assertion_or_none_is_an_invalid_client,
    an_unknown_client_is_an_invalid_client,
    an_audience_the_client_may_not_call_is_an_invalid_target,
    a_client_allowed_to_call_nobody_is_an_unauthorized_client,
    a_missing_audience_is_an_invalid_request,
    the_runtime_fetches_once_for_many_callers_and_refreshes_before_expiry,
);

const ISSUER: &str = "mercato-identity";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Identity with orders' key pair in its service key directory; `ttl` for the tokens.
async fn spawn(backend: TestBackend, ttl: u64) -> (TestApp, SigningKey) {
    let app = spawn_configured(backend, |config: &mut Config| {
        config.service.service_tokens.ttl_secs = ttl;
        config
            .service
            .service_tokens
            .calls
            .insert("notifications".into(), Vec::new());
    })
    .await;
    let dir = &app.config.service.service_tokens.keys_dir;
    ensure_client_key(dir, "orders").unwrap();
    let ClientCredential::Key(key) = client_credential(dir, "orders").unwrap() else {
        panic!("orders has a key");
    };
    (app, *key)
}

fn assertion(key: &SigningKey, client: &str, issued: u64, jti: &str) -> String {
    sign_assertion(client, ISSUER, key, issued, 60, jti).unwrap()
}

async fn grant(app: &TestApp, assertion: &str, audience: &str) -> reqwest::Response {
    app.post("/api/identity/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("audience", audience),
        ])
        .send()
        .await
        .unwrap()
}

fn verifier(app: &TestApp, audience: &str, service: bool) -> Verifier {
    let jwks = Arc::new(JwksClient::new(JwksClientConfig {
        url: app.url("/.well-known/jwks.json"),
        max_age: Duration::from_secs(60),
        min_refresh_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
    }));
    let config = VerifierConfig {
        audience: audience.into(),
        ..VerifierConfig::default()
    };
    if service {
        Verifier::for_service_tokens(config, jwks)
    } else {
        Verifier::new(config, jwks)
    }
}

async fn a_service_with_its_key_gets_a_short_lived_token_for_the_callee_it_asked_for(backend: TestBackend) {
    let (app, key) = spawn(backend, 300).await;
    let response = grant(&app, &assertion(&key, "orders", now(), "one"), "inventory").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["token_type"], "Bearer", "{answer}");
    assert_eq!(answer["expires_in"], 300, "{answer}");
    assert!(answer.get("refresh_token").is_none(), "{answer}");
    let token = answer["access_token"].as_str().unwrap();
    assert_eq!(jwt_part(token, 0)["typ"], "svc+jwt");
    let claims = verifier(&app, "inventory", true).verify(token).await.unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.aud.as_str()),
        ("orders", "inventory")
    );
    assert_eq!(claims.exp - claims.iat, 300);
    assert_eq!(
        verifier(&app, "customers", true).verify(token).await,
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        verifier(&app, "mercato", false).verify(token).await,
        Err(TokenError::WrongType),
        "never a customer's token"
    );
    // RFC 8707's `resource` names the callee as well.
    let by_resource = app
        .post("/api/identity/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion(&key, "orders", now(), "two")),
            ("resource", "customers"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(by_resource.status(), 200);
}

async fn a_service_with_its_secret_file_gets_a_token_and_a_wrong_secret_none(backend: TestBackend) {
    use std::os::unix::fs::PermissionsExt as _;
    let (app, _) = spawn(backend, 300).await;
    let dir = &app.config.service.service_tokens.keys_dir;
    std::fs::remove_file(dir.join("orders.pem")).unwrap();
    std::fs::remove_file(dir.join("orders.pub.jwk")).unwrap();
    let path = dir.join("orders.secret");
    std::fs::write(&path, "a long random secret\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let by_secret = |secret: &'static str| {
        app.post("/api/identity/token")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "orders"),
                ("client_secret", secret),
                ("audience", "customers"),
            ])
            .send()
    };
    let answer: Value = by_secret("a long random secret")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["access_token"].as_str().unwrap();
    assert_eq!(
        verifier(&app, "customers", true).verify(token).await.unwrap().sub,
        "orders"
    );
    expect_oauth_error_status(
        by_secret("a long random secreT").await.unwrap(),
        401,
        "invalid_client",
    )
    .await;
    // A secret every user of the machine could read is no secret: refused, and said so in the log.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let response = by_secret("a long random secret").await.unwrap();
    assert_eq!(response.status(), 500);
}

async fn an_assertion_signed_by_another_key_is_an_invalid_client(backend: TestBackend) {
    let (app, _) = spawn(backend, 300).await;
    let stranger = SigningKey::generate();
    let response = grant(&app, &assertion(&stranger, "orders", now(), "x"), "inventory").await;
    let body = expect_oauth_error_status(response, 401, "invalid_client").await;
    assert!(
        body["error_description"].as_str().unwrap().contains("signature"),
        "{body}"
    );
}

async fn an_expired_assertion_is_an_invalid_client(backend: TestBackend) {
    let (app, key) = spawn(backend, 300).await;
    let response = grant(&app, &assertion(&key, "orders", now() - 600, "old"), "inventory").await;
    let body = expect_oauth_error_status(response, 401, "invalid_client").await;
    assert!(
        body["error_description"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let long = sign_assertion("orders", ISSUER, &key, now(), 3_600, "long").unwrap();
    expect_oauth_error_status(grant(&app, &long, "inventory").await, 401, "invalid_client").await;
}

async fn a_replayed_assertion_is_an_invalid_client(backend: TestBackend) {
    let (app, key) = spawn(backend, 300).await;
    let once = assertion(&key, "orders", now(), "once");
    assert_eq!(grant(&app, &once, "inventory").await.status(), 200);
    let body = expect_oauth_error_status(grant(&app, &once, "inventory").await, 401, "invalid_client").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("used before"),
        "{body}"
    );
}

async fn a_malformed_assertion_or_none_is_an_invalid_client(backend: TestBackend) {
    let (app, key) = spawn(backend, 300).await;
    for junk in ["", "a.b.c", "not a jwt"] {
        expect_oauth_error_status(grant(&app, junk, "inventory").await, 401, "invalid_client").await;
    }
    let none = app
        .post("/api/identity/token")
        .form(&[("grant_type", "client_credentials"), ("audience", "inventory")])
        .send()
        .await
        .unwrap();
    expect_oauth_error_status(none, 401, "invalid_client").await;
    // An assertion must say what it is.
    let untyped = app
        .post("/api/identity/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion", &assertion(&key, "orders", now(), "t")),
            ("audience", "inventory"),
        ])
        .send()
        .await
        .unwrap();
    expect_oauth_error(untyped, "invalid_request").await;
}

async fn an_unknown_client_is_an_invalid_client(backend: TestBackend) {
    let (app, key) = spawn(backend, 300).await;
    for client in ["payments", "../orders", "Orders"] {
        let response = grant(&app, &assertion(&key, client, now(), client), "inventory").await;
        expect_oauth_error_status(response, 401, "invalid_client").await;
    }
}

async fn an_audience_the_client_may_not_call_is_an_invalid_target(backend: TestBackend) {
    let (app, key) = spawn(backend, 300).await;
    for (jti, audience) in [("1", "payments"), ("2", "identity"), ("3", "mercato")] {
        let response = grant(&app, &assertion(&key, "orders", now(), jti), audience).await;
        expect_oauth_error(response, "invalid_target").await;
    }
}

async fn a_client_allowed_to_call_nobody_is_an_unauthorized_client(backend: TestBackend) {
    let (app, _) = spawn(backend, 300).await;
    let dir = &app.config.service.service_tokens.keys_dir;
    ensure_client_key(dir, "notifications").unwrap();
    let ClientCredential::Key(key) = client_credential(dir, "notifications").unwrap() else {
        panic!("notifications has a key");
    };
    let response = grant(&app, &assertion(&key, "notifications", now(), "n"), "inventory").await;
    expect_oauth_error(response, "unauthorized_client").await;
}

async fn a_missing_audience_is_an_invalid_request(backend: TestBackend) {
    let (app, key) = spawn(backend, 300).await;
    let response = grant(&app, &assertion(&key, "orders", now(), "a"), "").await;
    expect_oauth_error(response, "invalid_request").await;
}

async fn the_runtime_fetches_once_for_many_callers_and_refreshes_before_expiry(backend: TestBackend) {
    // Five seconds of life: refreshed after four, while the held token still serves.
    let (app, key) = spawn(backend, 5).await;
    let tokens = ServiceTokens::new(
        "orders",
        &app.url("/api/identity/token"),
        ISSUER,
        ClientCredential::Key(Box::new(key)),
        reqwest::Client::new(),
    );
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let tokens = tokens.clone();
            tokio::spawn(async move { tokens.authorization("inventory").await.unwrap() })
        })
        .collect();
    let mut first = Vec::new();
    for call in calls {
        first.push(call.await.unwrap());
    }
    assert_eq!(tokens.fetches(), 1, "one fetch for 32 callers at once");
    assert!(first.iter().all(|t| *t == first[0]));
    assert!(first[0].is_sensitive(), "kept out of logs");
    tokens.authorization("customers").await.unwrap();
    assert_eq!(tokens.fetches(), 2, "a token per callee");
    let renewed = eventually(PATIENCE, "the token renewed", || async {
        let now = tokens.authorization("inventory").await.unwrap();
        (now != first[0]).then_some(now)
    })
    .await;
    assert_eq!(tokens.fetches(), 3, "renewed once, by one caller");
    let bearer = renewed
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    verifier(&app, "inventory", true).verify(&bearer).await.unwrap();
}
