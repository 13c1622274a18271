use mercato_testkit::service::send_body;
use mercato_testkit::{TestBackend, backend_tests};
use serde_json::Value;

use crate::support::{Body, PASSWORD, TestApp, expect_oauth_error, jwt_part, spawn_app};

backend_tests!(spawn_app =>
    the_access_token_is_es256_signed_by_a_published_key_and_names_the_user,
    a_wrong_password_is_an_invalid_grant,
    an_unknown_email_is_the_same_invalid_grant_as_a_wrong_password,
    a_missing_or_empty_parameter_is_an_invalid_request,
    an_unknown_grant_type_is_an_unsupported_grant_type,
    a_text_plain_body_is_an_invalid_request,
    a_malformed_body_is_an_invalid_request;
    a_form_encoded_password_grant_issues_an_uncacheable_bearer_token_pair,
    a_json_password_grant_issues_an_uncacheable_bearer_token_pair,
);

async fn password_grant_issues_an_uncacheable_bearer_token_pair(backend: TestBackend, body: Body) {
    let app = spawn_app(backend).await;
    app.register_user("ada@example.com", "Ada").await;
    let response = app.password_grant(body, "ada@example.com", PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["token_type"], "Bearer", "{answer}");
    assert_eq!(answer["expires_in"], 900, "{answer}");
    let access = answer["access_token"].as_str().unwrap();
    assert_eq!(access.split('.').count(), 3, "a JWT: {answer}");
    let refresh = answer["refresh_token"].as_str().unwrap();
    assert!(refresh.len() >= 32, "a long random refresh token: {answer}");
    assert_ne!(access, refresh);
}

async fn a_form_encoded_password_grant_issues_an_uncacheable_bearer_token_pair(backend: TestBackend) {
    password_grant_issues_an_uncacheable_bearer_token_pair(backend, Body::Form).await;
}

async fn a_json_password_grant_issues_an_uncacheable_bearer_token_pair(backend: TestBackend) {
    password_grant_issues_an_uncacheable_bearer_token_pair(backend, Body::Json).await;
}

async fn the_access_token_is_es256_signed_by_a_published_key_and_names_the_user(app: TestApp) {
    let user = app.register_user("ada@example.com", "Ada").await;
    let tokens = app.login("ada@example.com", PASSWORD).await;

    let header = jwt_part(&tokens.access, 0);
    assert_eq!(header["alg"], "ES256", "{header}");
    assert_eq!(header["typ"], "at+jwt", "{header}");
    let kid = header["kid"].as_str().unwrap();
    assert!(
        app.published_kids().await.iter().any(|k| k == kid),
        "the token's kid {kid} is in the JWKS"
    );

    let claims = jwt_part(&tokens.access, 1);
    assert_eq!(claims["iss"], "mercato-identity", "{claims}");
    assert_eq!(claims["aud"], "mercato", "{claims}");
    assert_eq!(claims["sub"], user["id"], "{claims}");
    assert_eq!(claims["roles"], serde_json::json!(["customer"]), "{claims}");
    let iat = claims["iat"].as_u64().unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    assert_eq!(exp - iat, 900, "{claims}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(iat.abs_diff(now) < 60, "issued now: {claims}");
}

async fn a_wrong_password_is_an_invalid_grant(app: TestApp) {
    app.register_user("ada@example.com", "Ada").await;
    for body in Body::BOTH {
        let response = app
            .password_grant(body, "ada@example.com", "not the password")
            .await;
        expect_oauth_error(response, "invalid_grant").await;
    }
}

async fn an_unknown_email_is_the_same_invalid_grant_as_a_wrong_password(app: TestApp) {
    app.register_user("ada@example.com", "Ada").await;
    let wrong_password = expect_oauth_error(
        app.password_grant(Body::Form, "ada@example.com", "not the password")
            .await,
        "invalid_grant",
    )
    .await;
    for unknown in ["eve@example.com", "not-an-email"] {
        let problem = expect_oauth_error(
            app.password_grant(Body::Form, unknown, PASSWORD).await,
            "invalid_grant",
        )
        .await;
        assert_eq!(
            problem, wrong_password,
            "the answer does not tell which emails have accounts"
        );
    }
}

async fn a_missing_or_empty_parameter_is_an_invalid_request(app: TestApp) {
    app.register_user("ada@example.com", "Ada").await;
    let complete = [
        ("grant_type", "password"),
        ("username", "ada@example.com"),
        ("password", PASSWORD),
    ];
    for body in Body::BOTH {
        for missing in ["grant_type", "username", "password"] {
            let without: Vec<_> = complete.iter().copied().filter(|(k, _)| *k != missing).collect();
            let problem = expect_oauth_error(app.token(body, &without).await, "invalid_request").await;
            assert!(
                problem["error_description"].as_str().unwrap().contains(missing),
                "{body:?} without {missing}: {problem}"
            );

            let empty: Vec<_> = complete
                .iter()
                .map(|&(k, v)| if k == missing { (k, "") } else { (k, v) })
                .collect();
            expect_oauth_error(app.token(body, &empty).await, "invalid_request").await;
        }
        let no_refresh_token = [("grant_type", "refresh_token")];
        expect_oauth_error(app.token(body, &no_refresh_token).await, "invalid_request").await;
    }
}

async fn an_unknown_grant_type_is_an_unsupported_grant_type(app: TestApp) {
    for body in Body::BOTH {
        for grant in [
            "authorization_code",
            "Password",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
        ] {
            let response = app
                .token(
                    body,
                    &[
                        ("grant_type", grant),
                        ("username", "ada@example.com"),
                        ("password", PASSWORD),
                    ],
                )
                .await;
            expect_oauth_error(response, "unsupported_grant_type").await;
        }
    }
}

async fn a_text_plain_body_is_an_invalid_request(app: TestApp) {
    app.register_user("ada@example.com", "Ada").await;
    let response = app
        .post("/api/identity/token")
        .header("content-type", "text/plain")
        .body(format!(
            "grant_type=password&username=ada%40example.com&password={}",
            PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();
    expect_oauth_error(response, "invalid_request").await;

    let response = app
        .post("/api/identity/token")
        .body("grant_type=password")
        .send()
        .await
        .unwrap();
    expect_oauth_error(response, "invalid_request").await;
}

async fn a_malformed_body_is_an_invalid_request(app: TestApp) {
    for (content_type, body) in [
        ("application/json", r#"{"grant_type": "password", "#),
        ("application/json", r#"{"grant_type": 1}"#),
        (
            "application/x-www-form-urlencoded",
            "grant_type=password&grant_type=refresh_token",
        ),
    ] {
        let response = send_body(app.post("/api/identity/token"), content_type, body).await;
        expect_oauth_error(response, "invalid_request").await;
    }
}
