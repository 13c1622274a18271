use mercato_security::{ACCESS_TOKEN_TYPE, SigningKey};
use mercato_testkit::eventually;
use serde_json::json;

use crate::support::{
    PATIENCE, TestGateway, claims, closed_url, echoed, expect_problem_of, forge, seen_header, sign,
    spawn_gateway, spawn_gateway_with,
};

#[tokio::test]
async fn a_token_from_a_newly_published_key_is_accepted_once_an_unknown_kid_triggers_a_refetch() {
    let gateway = spawn_gateway_with(|config| config.gateway.jwks_min_refresh_interval_ms = 10).await;
    let old = gateway.token("ada", &["customer"]);
    echoed(gateway.get_as("/api/private/x", &old).await).await;
    let rotated = SigningKey::generate();
    let new = sign(&claims("bob", &["customer"]), &rotated);
    let before = gateway.get_as("/api/private/x", &new).await;
    expect_problem_of(before, 401, "unauthorized").await;

    gateway.keys.publish(&rotated);

    let seen = eventually(PATIENCE, "the new key to be accepted", || async {
        let response = gateway.get_as("/api/private/x", &new).await;
        if response.status() == 200 {
            Some(response.json::<serde_json::Value>().await.unwrap())
        } else {
            None
        }
    })
    .await;
    assert_eq!(seen_header(&seen, "x-auth-subject"), ["bob"]);
    // Well within the cache's max age, so only unknown kids caused the refetches.
    assert!(gateway.keys.fetches() >= 2, "{} fetches", gateway.keys.fetches());
    echoed(gateway.get_as("/api/private/x", &old).await).await;
}

#[tokio::test]
async fn a_flood_of_made_up_kids_causes_no_more_fetches_than_the_refresh_interval_allows() {
    let gateway = spawn_gateway_with(|config| config.gateway.jwks_min_refresh_interval_ms = 60_000).await;
    let valid = gateway.token("ada", &["customer"]);
    echoed(gateway.get_as("/api/private/x", &valid).await).await;
    assert_eq!(gateway.keys.fetches(), 1);

    let requests = (0..20).map(|i| {
        let header = json!({"alg": "ES256", "typ": ACCESS_TOKEN_TYPE, "kid": format!("made-up-{i}")});
        let token = forge(&header, &claims("mallory", &["admin"]), &[0; 64]);
        let request = gateway.get("/api/private/x").bearer_auth(token);
        async move { request.send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(requests).await;

    for response in responses {
        expect_problem_of(response, 401, "unauthorized").await;
    }
    assert_eq!(
        gateway.keys.fetches(),
        1,
        "made-up kids must not each cost a fetch"
    );
    assert_eq!(gateway.echo.hits(), 1);
}

/// A gateway whose key set cannot be fetched.
async fn spawn_gateway_without_keys() -> TestGateway {
    spawn_gateway_with(|config| {
        config.jwks_url = format!("{}/.well-known/jwks.json", closed_url());
    })
    .await
}

#[tokio::test]
async fn an_unreachable_jwks_makes_authenticated_routes_answer_503_not_401() {
    let gateway = spawn_gateway_without_keys().await;
    let token = gateway.token("ada", &["customer"]);

    let response = gateway.get_as("/api/private/x", &token).await;

    assert!(
        response.headers().contains_key("retry-after"),
        "{:?}",
        response.headers()
    );
    assert!(!response.headers().contains_key("www-authenticate"));
    expect_problem_of(response, 503, "unavailable").await;
    assert_eq!(gateway.echo.hits(), 0);
}

#[tokio::test]
async fn an_unreachable_jwks_makes_the_gateway_not_ready() {
    let gateway = spawn_gateway_without_keys().await;

    let ready = gateway.readiness().await;

    assert!(ready.down("jwks")["error"].is_string(), "{}", ready.report);
}

#[tokio::test]
async fn public_routes_keep_working_while_the_jwks_is_unreachable() {
    let gateway = spawn_gateway_without_keys().await;

    let seen = echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;

    assert_eq!(seen["upstream"], "echo");
}

#[tokio::test]
async fn the_gateway_is_ready_once_it_has_fetched_the_keys() {
    let gateway = spawn_gateway().await;

    let response = gateway.get("/ready").send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(gateway.keys.fetches(), 1);
    // The cached set answers later probes without fetching again.
    assert_eq!(gateway.get("/ready").send().await.unwrap().status(), 200);
    assert_eq!(gateway.keys.fetches(), 1);
}
