use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mercato_security::{ACCESS_TOKEN_TYPE, Claims, SigningKey};
use serde_json::{Value, json};

use crate::support::{
    TestGateway, claims, echoed, expect_problem_of, forge, seen_header, segment, sign, spawn_gateway,
};

const PROTECTED: &str = "/api/private/orders";

/// Sends `authorization` to an authenticated route and checks it is refused as an invalid token
/// without reaching the upstream.
async fn assert_refused(gateway: &TestGateway, authorization: &str) -> Value {
    let response = gateway
        .get_with_header(PROTECTED, "authorization", authorization)
        .await;
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = expect_problem_of(response, 401, "unauthorized").await;
    let challenge = challenge.expect("a 401 carries a WWW-Authenticate challenge");
    assert!(challenge.starts_with(r#"Bearer realm="mercato""#), "{challenge}");
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
    assert_eq!(
        gateway.echo.hits(),
        0,
        "a refused request never reaches the upstream"
    );
    body
}

async fn assert_token_refused(gateway: &TestGateway, token: &str) -> Value {
    assert_refused(gateway, &format!("Bearer {token}")).await
}

/// A customer's token signed by the published key, with its claims changed by `adjust`, is
/// refused by a standard gateway.
async fn assert_claims_refused(adjust: impl FnOnce(&mut Claims)) -> Value {
    let gateway = spawn_gateway().await;
    let mut changed = claims("ada", &["customer"]);
    adjust(&mut changed);
    assert_token_refused(&gateway, &sign(&changed, &gateway.signer)).await
}

#[tokio::test]
async fn a_request_without_a_token_is_challenged_with_401() {
    let gateway = spawn_gateway().await;

    let response = gateway.get(PROTECTED).send().await.unwrap();

    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="mercato""#,
        "a missing token is not an invalid one (RFC 6750 §3.1)"
    );
    expect_problem_of(response, 401, "unauthorized").await;
    assert_eq!(gateway.echo.hits(), 0);
}

#[tokio::test]
async fn a_basic_authorization_header_is_refused() {
    let gateway = spawn_gateway().await;

    let body = assert_refused(&gateway, "Basic YWRtaW46YWRtaW4=").await;

    assert!(body["detail"].as_str().unwrap().contains("Bearer"), "{body}");
}

#[tokio::test]
async fn an_empty_bearer_token_is_refused() {
    let gateway = spawn_gateway().await;

    assert_refused(&gateway, "Bearer ").await;
    assert_refused(&gateway, "Bearer").await;
}

#[tokio::test]
async fn an_expired_token_is_refused_as_invalid() {
    let body = assert_claims_refused(|expired| {
        expired.exp = expired.iat - 120;
        expired.iat -= 600;
        expired.nbf = expired.iat;
    })
    .await;

    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    assert_claims_refused(|early| {
        early.nbf += 600;
        early.exp += 600;
    })
    .await;
}

#[tokio::test]
async fn a_token_with_a_tampered_payload_is_refused() {
    let gateway = spawn_gateway().await;
    let token = gateway.token("ada", &["customer"]);
    let (header, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let admin_payload = segment(&claims("ada", &["admin"]));

    assert_token_refused(&gateway, &format!("{header}.{admin_payload}.{signature}")).await;
}

#[tokio::test]
async fn an_alg_none_token_is_refused() {
    let gateway = spawn_gateway().await;
    let header = json!({"alg": "none", "typ": ACCESS_TOKEN_TYPE, "kid": gateway.signer.kid});

    let unsigned = forge(&header, &claims("ada", &["admin"]), b"");

    assert_token_refused(&gateway, &unsigned).await;
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_published_jwk_is_refused() {
    let gateway = spawn_gateway().await;
    // The attacker knows the public key and uses its JSON as an HMAC secret (RS/HS confusion).
    let secret = serde_json::to_vec(&gateway.signer.public).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(gateway.signer.kid.clone());
    header.typ = Some(ACCESS_TOKEN_TYPE.into());
    let token = jsonwebtoken::encode(
        &header,
        &claims("ada", &["admin"]),
        &EncodingKey::from_secret(&secret),
    )
    .unwrap();

    assert_token_refused(&gateway, &token).await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let body = assert_claims_refused(|foreign| foreign.iss = "https://evil.example".into()).await;

    assert!(body["detail"].as_str().unwrap().contains("issuer"), "{body}");
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let body = assert_claims_refused(|elsewhere| elsewhere.aud = "another-api".into()).await;

    assert!(body["detail"].as_str().unwrap().contains("audience"), "{body}");
}

#[tokio::test]
async fn a_token_signed_by_a_key_outside_the_jwks_is_refused() {
    let gateway = spawn_gateway().await;
    let stranger = SigningKey::generate();

    let body = assert_token_refused(&gateway, &sign(&claims("ada", &["admin"]), &stranger)).await;

    assert!(body["detail"].as_str().unwrap().contains("unknown key"), "{body}");
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_published_kid_is_refused() {
    let gateway = spawn_gateway().await;
    let stranger = SigningKey::generate();
    let token = sign(&claims("ada", &["admin"]), &stranger);
    let (_, rest) = token.split_once('.').unwrap();
    let header = json!({"alg": "ES256", "typ": ACCESS_TOKEN_TYPE, "kid": gateway.signer.kid});

    assert_token_refused(&gateway, &format!("{}.{rest}", segment(&header))).await;
}

#[tokio::test]
async fn a_service_token_signed_by_the_published_key_is_refused() {
    let gateway = spawn_gateway().await;
    // Every claim a customer's token would carry; only the type says it is a service's.
    let token = mercato_security::sign_service(&claims("orders", &["admin"]), &gateway.signer).unwrap();

    let body = assert_token_refused(&gateway, &token).await;

    assert!(body["detail"].as_str().unwrap().contains("type"), "{body}");
}

#[tokio::test]
async fn garbage_in_place_of_a_token_is_refused() {
    let gateway = spawn_gateway().await;

    for junk in ["abc", "a.b.c", "....", "eyJ.eyJ.x"] {
        assert_token_refused(&gateway, junk).await;
    }
}

#[tokio::test]
async fn a_valid_token_reaches_the_upstream_with_the_verified_identity() {
    let gateway = spawn_gateway().await;
    let token = gateway.token("user-42", &["customer", "admin"]);

    let response = gateway.get_as(PROTECTED, &token).await;
    let seen = echoed(response).await;

    assert_eq!(seen_header(&seen, "x-auth-subject"), ["user-42"]);
    assert_eq!(seen_header(&seen, "x-auth-roles"), ["customer,admin"]);
    assert_eq!(gateway.echo.hits(), 1);
}
