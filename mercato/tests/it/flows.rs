//! The public flows through the gateway, on both backends.

use mercato_security::{Claims, KeyStore};
use mercato_testkit::problem::challenge;
use mercato_testkit::service::{send_body, text_answer};
use mercato_testkit::{TestBackend, backend_tests};
use serde_json::{Value, json};

use crate::support::{
    Started, System, access_token, declare_oversized_body, fresh, login, problem, register, started,
    unique_email,
};
use reqwest::Method;

backend_tests!(started =>
    a_new_user_registers_logs_in_and_reads_their_profile_through_the_gateway,
    a_refresh_token_renews_access_once_and_its_reuse_revokes_the_family,
    bad_registrations_are_problems_naming_the_field;
    bad_tokens_are_refused_by_the_gateway_with_a_challenge,
    the_gateway_answers_unknown_routes_and_a_dead_upstream_with_problems,
);

async fn a_new_user_registers_logs_in_and_reads_their_profile_through_the_gateway((_db, system): Started) {
    let email = unique_email();

    let created = register(&system.http, &system.gateway, &email).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["email"], email.as_str());

    let tokens = login(&system.http, &system.gateway, &email).await;
    assert_eq!(tokens["token_type"], "Bearer");
    let me = system
        .http
        .get(system.url("/api/identity/me"))
        .bearer_auth(access_token(&tokens))
        .header("x-correlation-id", "e2e-flow-1")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.headers()["x-correlation-id"], "e2e-flow-1");
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["id"], created["id"]);
    assert_eq!(me["roles"], json!(["customer"]));

    let jwks: Value = system.get_public("/.well-known/jwks.json").await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);

    let metrics = text_answer(system.http.get(system.url("/metrics"))).await;
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="/api/identity",status_code="200"} 1"#),
        "{metrics}"
    );
    system.stop().await;
}

async fn a_refresh_token_renews_access_once_and_its_reuse_revokes_the_family((_db, system): Started) {
    let email = unique_email();
    register(&system.http, &system.gateway, &email).await;
    let first = login(&system.http, &system.gateway, &email).await;
    let refresh = |token: Value| {
        let http = system.http.clone();
        let url = system.url("/api/identity/token");
        async move {
            http.post(url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str().unwrap()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let second = refresh(first["refresh_token"].clone()).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);

    let replay = refresh(first["refresh_token"].clone()).await;
    assert_eq!(problem(replay, 400).await["error"], "invalid_grant");
    // The replay revoked the whole family, including the token issued second.
    let after = refresh(second["refresh_token"].clone()).await;
    assert_eq!(problem(after, 400).await["error"], "invalid_grant");
    system.stop().await;
}

async fn bad_registrations_are_problems_naming_the_field((_db, system): Started) {
    let url = system.url("/api/identity/register");
    let cases = [
        (
            json!({"email": "not-an-email", "password": "correct horse", "name": "Ada"}),
            "email",
        ),
        (
            json!({"email": "ada@example.com", "password": "short", "name": "Ada"}),
            "password",
        ),
        (
            json!({"email": "ada@example.com", "password": "correct horse", "name": " "}),
            "name",
        ),
        (
            json!({"email": "ada@example.com", "password": "correct horse"}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let response = system.http.post(&url).json(&body).send().await.unwrap();
        let body = problem(response, 422).await;
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let malformed = send_body(system.http.post(&url), "application/json", "{").await;
    problem(malformed, 400).await;
    let (status, body) =
        declare_oversized_body(&system.gateway, "/api/identity/register", None, 2 * 1024 * 1024).await;
    assert_eq!(status, 413, "{body}");

    let email = unique_email();
    assert_eq!(
        register(&system.http, &system.gateway, &email).await.status(),
        201
    );
    let again = register(&system.http, &system.gateway, &email.to_uppercase()).await;
    problem(again, 409).await;
    system.stop().await;
}

async fn bad_tokens_are_refused_by_the_gateway_with_a_challenge(backend: TestBackend) {
    let (_db, config) = fresh(backend).await;
    let system = System::start(config.clone()).await;
    let email = unique_email();
    register(&system.http, &system.gateway, &email).await;
    let good = access_token(&login(&system.http, &system.gateway, &email).await);

    // A token signed with the real key but already expired.
    let key = KeyStore::new(&config.identity.keys_dir, std::time::Duration::from_secs(900))
        .load()
        .unwrap()
        .active;
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = Claims {
        iss: config.auth.issuer.clone(),
        aud: config.auth.audience.clone(),
        sub: "someone".into(),
        exp: now - 600,
        iat: now - 1200,
        nbf: now - 1200,
        jti: "x".into(),
        roles: vec!["admin".into()],
    };
    let expired = mercato_security::sign(&claims, &key).unwrap();
    claims.exp = now + 600;
    claims.iss = "someone-else".into();
    let foreign_issuer = mercato_security::sign(&claims, &key).unwrap();
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"admin","roles":["admin"]}"#)
    };
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.{forged_payload}.");

    for (what, token) in [
        ("expired", expired),
        ("issuer", foreign_issuer),
        ("tampered", tampered),
        ("none", none),
    ] {
        let response = system.send(Method::GET, "/api/identity/me", &token).await;
        let challenge = challenge(&response);
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{what}: {challenge}"
        );
        problem(response, 401).await;
    }
    let missing = system.send_anonymous(Method::GET, "/api/identity/me", None).await;
    assert_eq!(missing.headers()["www-authenticate"], r#"Bearer realm="mercato""#);
    problem(missing, 401).await;
    system.stop().await;
}

async fn the_gateway_answers_unknown_routes_and_a_dead_upstream_with_problems(backend: TestBackend) {
    let (_db, mut config) = fresh(backend).await;
    let system = System::start(config.clone()).await;
    let unknown = system
        .send_anonymous(Method::GET, "/api/nothing-here", None)
        .await;
    problem(unknown, 404).await;
    system.stop().await;

    // A gateway alone, whose identity upstream is gone.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.services.get_mut("identity").unwrap().url = Some(format!("http://{dead}"));
    let shutdown = mercato_runtime::CancellationToken::new();
    let running = mercato::start(&config, &[mercato::ServiceName::Gateway], shutdown.clone())
        .await
        .unwrap();
    let gateway = running.url(mercato::ServiceName::Gateway).unwrap().to_owned();
    let response = reqwest::Client::new()
        .post(format!("{gateway}/api/identity/register"))
        .json(&json!({"email": "a@example.com", "password": "correct horse", "name": "A"}))
        .send()
        .await
        .unwrap();
    problem(response, 502).await;
    let ready = reqwest::get(format!("{gateway}/ready")).await.unwrap();
    assert_eq!(
        ready.status(),
        503,
        "the gateway cannot verify tokens without identity's keys"
    );
    running.stop().await.unwrap();
}
