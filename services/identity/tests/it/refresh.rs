use mercato_testkit::backend_tests;
use serde_json::Value;

use crate::support::{Body, PASSWORD, TestApp, expect_oauth_error, expect_tokens, spawn_app};

backend_tests!(spawn_app =>
    a_refresh_grant_issues_a_new_pair_with_a_new_refresh_token,
    a_json_refresh_grant_is_accepted_too,
    reusing_a_rotated_refresh_token_revokes_its_whole_family,
    reuse_in_one_session_leaves_the_users_other_sessions_alone,
    a_made_up_refresh_token_is_an_invalid_grant,
    concurrent_refreshes_with_one_token_succeed_only_once,
    a_revoked_refresh_token_and_its_successors_renew_nothing,
);

async fn a_refresh_grant_issues_a_new_pair_with_a_new_refresh_token(app: TestApp) {
    let first = app.customer("ada@example.com").await;

    let response = app.refresh(&first.refresh).await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    let second = expect_tokens(response).await;
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);

    let me = app.me(&second.access).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["email"], "ada@example.com");

    let third = expect_tokens(app.refresh(&second.refresh).await).await;
    assert_ne!(third.refresh, second.refresh);
}

async fn a_json_refresh_grant_is_accepted_too(app: TestApp) {
    let first = app.customer("ada@example.com").await;
    let params = [
        ("grant_type", "refresh_token"),
        ("refresh_token", first.refresh.as_str()),
    ];
    let second = expect_tokens(app.token(Body::Json, &params).await).await;
    assert_ne!(second.refresh, first.refresh);
}

async fn reusing_a_rotated_refresh_token_revokes_its_whole_family(app: TestApp) {
    let first = app.customer("ada@example.com").await;
    let second = expect_tokens(app.refresh(&first.refresh).await).await;

    expect_oauth_error(app.refresh(&first.refresh).await, "invalid_grant").await;
    // The token issued before the reuse may be the thief's: it is revoked too.
    expect_oauth_error(app.refresh(&second.refresh).await, "invalid_grant").await;
    expect_oauth_error(app.refresh(&first.refresh).await, "invalid_grant").await;
}

async fn reuse_in_one_session_leaves_the_users_other_sessions_alone(app: TestApp) {
    let phone = app.customer("ada@example.com").await;
    let laptop = app.login("ada@example.com", PASSWORD).await;

    expect_tokens(app.refresh(&phone.refresh).await).await;
    expect_oauth_error(app.refresh(&phone.refresh).await, "invalid_grant").await;

    expect_tokens(app.refresh(&laptop.refresh).await).await;
}

async fn a_made_up_refresh_token_is_an_invalid_grant(app: TestApp) {
    let tokens = app.customer("ada@example.com").await;
    for made_up in [
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "x",
        tokens.access.as_str(),
    ] {
        expect_oauth_error(app.refresh(made_up).await, "invalid_grant").await;
    }
    expect_tokens(app.refresh(&tokens.refresh).await).await;
}

async fn concurrent_refreshes_with_one_token_succeed_only_once(app: TestApp) {
    let tokens = app.customer("ada@example.com").await;
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let request = app.post("/api/identity/token").form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &tokens.refresh),
        ]);
        attempts.spawn(async move { request.send().await.unwrap() });
    }
    let mut granted = 0;
    while let Some(response) = attempts.join_next().await {
        let response = response.unwrap();
        if response.status() == 200 {
            granted += 1;
        } else {
            expect_oauth_error(response, "invalid_grant").await;
        }
    }
    assert_eq!(granted, 1, "one refresh token buys one new pair");
}

async fn a_revoked_refresh_token_and_its_successors_renew_nothing(app: TestApp) {
    let first = app.customer("ada@example.com").await;
    let second = expect_tokens(app.refresh(&first.refresh).await).await;
    let other_session = app.login("ada@example.com", PASSWORD).await;
    let revoke = |form: Vec<(&'static str, String)>| app.post("/api/identity/revoke").form(&form).send();

    // Revoking the first token ends its whole sign-in, the rotated token included.
    let revoked = revoke(vec![("token", first.refresh.clone())]).await.unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(revoked.headers()["cache-control"], "no-store");
    expect_oauth_error(app.refresh(&second.refresh).await, "invalid_grant").await;
    // RFC 7009: a token identity does not know gets the same answer; a missing one is a 400.
    let unknown = revoke(vec![
        ("token", "made-up".to_owned()),
        ("token_type_hint", "refresh_token".to_owned()),
    ]);
    assert_eq!(unknown.await.unwrap().status(), 200);
    expect_oauth_error(revoke(vec![]).await.unwrap(), "invalid_request").await;
    // Another sign-in of the same user goes on.
    expect_tokens(app.refresh(&other_session.refresh).await).await;
}
