use mercato_identity::admin::{AdminOutcome, create_admin};
use mercato_identity::store::MIGRATIONS;
use mercato_identity::{AccountError, Accounts, NAME};
use mercato_testkit::backend_tests;
use serde_json::Value;

use crate::support::{Body, PASSWORD, TestApp, expect_oauth_error, expect_tokens, roles_of, spawn_app};

backend_tests!(spawn_app =>
    create_admin_makes_an_account_whose_tokens_carry_the_admin_role,
    create_admin_promotes_an_existing_account_and_keeps_its_password,
    a_promotion_reaches_the_next_refreshed_token,
    create_admin_refuses_a_malformed_email,
    create_admin_refuses_a_weak_password_for_a_new_account,
);

/// The account operations over the running service's database and keys, as the CLI opens them.
async fn accounts(app: &TestApp) -> Accounts {
    let db = mercato_kit::builder::open_database(NAME, &app.config.service.database, MIGRATIONS)
        .await
        .unwrap();
    mercato_identity::accounts(db, &app.config).unwrap()
}

async fn create_admin_makes_an_account_whose_tokens_carry_the_admin_role(app: TestApp) {
    let outcome = create_admin(&accounts(&app).await, " Root@Example.com", PASSWORD)
        .await
        .unwrap();
    let AdminOutcome::Created { id } = outcome else {
        panic!("a new account is created: {outcome:?}");
    };

    let tokens = app.login("root@example.com", PASSWORD).await;
    let roles = roles_of(&tokens.access);
    assert!(roles.iter().any(|r| r == "admin"), "{roles:?}");
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["email"], "root@example.com");
    assert_eq!(me["roles"], serde_json::json!(["admin", "customer"]));
}

async fn create_admin_promotes_an_existing_account_and_keeps_its_password(app: TestApp) {
    let user = app.register_user("ada@example.com", "Ada").await;
    let before = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(roles_of(&before.access), ["customer"]);

    let accounts = accounts(&app).await;
    let outcome = create_admin(&accounts, "ADA@example.com", "another password")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        AdminOutcome::Promoted {
            id: user["id"].as_str().unwrap().to_owned()
        }
    );
    // Promoting twice changes nothing.
    let again = create_admin(&accounts, "ada@example.com", "another password")
        .await
        .unwrap();
    assert_eq!(again, outcome);

    let after = app.login("ada@example.com", PASSWORD).await;
    let mut roles = roles_of(&after.access);
    roles.sort();
    assert_eq!(roles, ["admin", "customer"]);
    let refused = app
        .password_grant(Body::Form, "ada@example.com", "another password")
        .await;
    expect_oauth_error(refused, "invalid_grant").await;
}

async fn a_promotion_reaches_the_next_refreshed_token(app: TestApp) {
    let before = app.customer("ada@example.com").await;
    create_admin(&accounts(&app).await, "ada@example.com", PASSWORD)
        .await
        .unwrap();

    let refreshed = expect_tokens(app.refresh(&before.refresh).await).await;
    let mut roles = roles_of(&refreshed.access);
    roles.sort();
    assert_eq!(roles, ["admin", "customer"]);
}

async fn create_admin_refuses_a_malformed_email(app: TestApp) {
    let accounts = accounts(&app).await;
    for email in ["root", "root@localhost", ""] {
        let error = create_admin(&accounts, email, PASSWORD).await.unwrap_err();
        let AccountError::Invalid(fields) = &error else {
            panic!("{email:?}: {error:?}");
        };
        let names: Vec<_> = fields.iter().map(|(f, _)| *f).collect();
        assert_eq!(names, ["email"], "{email:?}");
    }
}

async fn create_admin_refuses_a_weak_password_for_a_new_account(app: TestApp) {
    let accounts = accounts(&app).await;
    for password in ["short", "root@example.com"] {
        let error = create_admin(&accounts, "root@example.com", password)
            .await
            .unwrap_err();
        let AccountError::Invalid(fields) = &error else {
            panic!("{password:?}: {error:?}");
        };
        let names: Vec<_> = fields.iter().map(|(f, _)| *f).collect();
        assert_eq!(names, ["password"], "{password:?}");
    }
    let refused = app.password_grant(Body::Form, "root@example.com", "short").await;
    expect_oauth_error(refused, "invalid_grant").await;
}
