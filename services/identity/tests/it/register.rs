use mercato_testkit::backend_tests;
use mercato_testkit::service::send_body;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestApp, expect_problem_of, invalid_fields, spawn_app};

backend_tests!(spawn_app =>
    registering_answers_201_with_the_new_user,
    the_email_is_trimmed_and_lower_cased,
    a_taken_email_is_a_409_problem,
    an_email_taken_in_another_case_is_a_409_problem,
    a_malformed_email_is_a_422_naming_email,
    a_password_shorter_than_8_characters_is_a_422_naming_password,
    a_password_that_is_too_long_blank_or_the_email_is_a_422_naming_password,
    an_empty_name_is_a_422_naming_name,
    every_invalid_field_is_named_in_one_422,
    a_missing_field_is_a_422_naming_it,
    a_refused_registration_creates_no_account,
    malformed_json_is_a_400_problem,
    an_unknown_field_is_a_422_problem,
    a_body_that_is_not_json_is_a_415_problem,
    concurrent_registrations_of_one_email_create_exactly_one_account,
);

/// Registering with `body` is refused as a `422`; the fields the problem names.
async fn refused_fields(app: &TestApp, body: &Value) -> Vec<String> {
    let problem = expect_problem_of(app.register(body).await, 422, "validation-error").await;
    invalid_fields(&problem).into_iter().map(str::to_owned).collect()
}

async fn registering_answers_201_with_the_new_user(app: TestApp) {
    let response = app
        .register(&json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada Lovelace"}))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["content-type"], "application/json");
    let user: Value = response.json().await.unwrap();
    assert!(user["id"].as_str().is_some_and(|id| !id.is_empty()), "{user}");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(
        user.as_object().unwrap().len(),
        3,
        "only id, email and name, never the password: {user}"
    );
}

async fn the_email_is_trimmed_and_lower_cased(app: TestApp) {
    let user = app.register_user("  Ada@Example.COM ", "Ada").await;
    assert_eq!(user["email"], "ada@example.com");

    app.login("ada@example.com", PASSWORD).await;
    let tokens = app.login(" ADA@EXAMPLE.COM", PASSWORD).await;
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["id"], user["id"]);
}

async fn a_taken_email_is_a_409_problem(app: TestApp) {
    registering_again_is_a_409(&app, "ada@example.com").await;
}

async fn an_email_taken_in_another_case_is_a_409_problem(app: TestApp) {
    registering_again_is_a_409(&app, " ADA@example.com").await;
}

/// Registers ada@example.com, then `email` (the same address as written by someone else).
async fn registering_again_is_a_409(app: &TestApp, email: &str) {
    app.register_user("ada@example.com", "Ada").await;
    let response = app
        .register(&json!({"email": email, "password": "another password", "name": "Eve"}))
        .await;
    expect_problem_of(response, 409, "conflict").await;
}

async fn a_malformed_email_is_a_422_naming_email(app: TestApp) {
    for email in [
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "a da@example.com",
        "",
    ] {
        let body = json!({"email": email, "password": PASSWORD, "name": "Ada"});
        assert_eq!(refused_fields(&app, &body).await, ["email"], "{email:?}");
    }
}

async fn a_password_shorter_than_8_characters_is_a_422_naming_password(app: TestApp) {
    let body = json!({"email": "ada@example.com", "password": "1234567", "name": "Ada"});
    assert_eq!(refused_fields(&app, &body).await, ["password"]);
}

async fn a_password_that_is_too_long_blank_or_the_email_is_a_422_naming_password(app: TestApp) {
    for password in ["x".repeat(129), " ".repeat(12), "Ada@Example.com".to_owned()] {
        let body = json!({"email": "ada@example.com", "password": password, "name": "Ada"});
        assert_eq!(refused_fields(&app, &body).await, ["password"]);
    }
}

async fn an_empty_name_is_a_422_naming_name(app: TestApp) {
    for name in ["", "   "] {
        let body = json!({"email": "ada@example.com", "password": PASSWORD, "name": name});
        assert_eq!(refused_fields(&app, &body).await, ["name"], "{name:?}");
    }
}

async fn every_invalid_field_is_named_in_one_422(app: TestApp) {
    let body = json!({"email": "not-an-email", "password": "short", "name": ""});
    let mut fields = refused_fields(&app, &body).await;
    fields.sort_unstable();
    assert_eq!(fields, ["email", "name", "password"]);
}

async fn a_missing_field_is_a_422_naming_it(app: TestApp) {
    let complete = json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"});
    for missing in ["email", "password", "name"] {
        let mut body = complete.clone();
        body.as_object_mut().unwrap().remove(missing);
        assert_eq!(refused_fields(&app, &body).await, [missing]);
    }
}

async fn a_refused_registration_creates_no_account(app: TestApp) {
    let body = json!({"email": "ada@example.com", "password": "short", "name": "Ada"});
    assert_eq!(refused_fields(&app, &body).await, ["password"]);
    app.register_user("ada@example.com", "Ada").await;
}

async fn malformed_json_is_a_400_problem(app: TestApp) {
    let response = send_body(
        app.post("/api/identity/register"),
        "application/json",
        r#"{"email": "ada@example.com", "password":"#,
    )
    .await;
    expect_problem_of(response, 400, "bad-request").await;
}

async fn an_unknown_field_is_a_422_problem(app: TestApp) {
    let response = app
        .register(&json!({
            "email": "ada@example.com",
            "password": PASSWORD,
            "name": "Ada",
            "roles": ["admin"],
        }))
        .await;
    let problem = expect_problem_of(response, 422, "validation-error").await;
    assert_eq!(
        invalid_fields(&problem),
        ["roles"],
        "the problem names the unknown field: {problem}"
    );
}

async fn a_body_that_is_not_json_is_a_415_problem(app: TestApp) {
    let response = app
        .post("/api/identity/register")
        .form(&[
            ("email", "ada@example.com"),
            ("password", PASSWORD),
            ("name", "Ada"),
        ])
        .send()
        .await
        .unwrap();
    expect_problem_of(response, 415, "unsupported-media-type").await;
}

async fn concurrent_registrations_of_one_email_create_exactly_one_account(app: TestApp) {
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..8 {
        let request = app
            .post("/api/identity/register")
            .json(&json!({"email": "ada@example.com", "password": PASSWORD, "name": format!("Ada {i}")}));
        attempts.spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
            (status, content_type)
        });
    }
    let mut statuses = Vec::new();
    while let Some(outcome) = attempts.join_next().await {
        let (status, content_type) = outcome.unwrap();
        if status == 409 {
            assert_eq!(content_type, "application/problem+json");
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    app.login("ada@example.com", PASSWORD).await;
}
