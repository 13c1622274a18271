use mercato_security::{Claims, SigningKey, sign};
use mercato_testkit::backend_tests;
use mercato_testkit::problem::challenge;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestApp, expect_problem_of, jwt_part, spawn_app};

backend_tests!(spawn_app =>
    me_answers_the_callers_profile_and_roles,
    me_without_a_token_is_a_401_with_a_bearer_challenge,
    me_with_a_garbage_token_is_a_401_invalid_token,
    me_with_a_token_signed_by_a_foreign_key_is_a_401,
    me_with_another_authentication_scheme_is_a_401,
);

async fn me_answers_the_callers_profile_and_roles(app: TestApp) {
    let user = app.register_user("ada@example.com", "Ada Lovelace").await;
    let tokens = app.login("ada@example.com", PASSWORD).await;

    let response = app.me(&tokens.access).await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(
        me,
        json!({
            "id": user["id"],
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "roles": ["customer"],
        })
    );
}

async fn me_without_a_token_is_a_401_with_a_bearer_challenge(app: TestApp) {
    let response = app.get("/api/identity/me").send().await.unwrap();
    let challenge = challenge(&response);
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(
        !challenge.contains("invalid_token"),
        "no token is not a bad token: {challenge}"
    );
    expect_problem_of(response, 401, "unauthorized").await;
}

async fn me_with_a_garbage_token_is_a_401_invalid_token(app: TestApp) {
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"] {
        let response = app.me(garbage).await;
        let challenge = challenge(&response);
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{garbage}: {challenge}"
        );
        expect_problem_of(response, 401, "unauthorized").await;
    }
}

async fn me_with_a_token_signed_by_a_foreign_key_is_a_401(app: TestApp) {
    let tokens = app.customer("ada@example.com").await;
    let claims: Claims = serde_json::from_value(jwt_part(&tokens.access, 1)).unwrap();
    let forged = sign(&claims, &SigningKey::generate()).unwrap();
    let response = app.me(&forged).await;
    assert!(response.headers().contains_key("www-authenticate"));
    expect_problem_of(response, 401, "unauthorized").await;
}

async fn me_with_another_authentication_scheme_is_a_401(app: TestApp) {
    let tokens = app.customer("ada@example.com").await;
    let response = app
        .get("/api/identity/me")
        .header("authorization", format!("Basic {}", tokens.access))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("www-authenticate"));
    expect_problem_of(response, 401, "unauthorized").await;
}
