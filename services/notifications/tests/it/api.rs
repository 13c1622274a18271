//! The mailbox over HTTP: pages, validation, isolation, authentication, and the operations
//! endpoints.

use mercato_testkit::problem::expect_problem;
use mercato_testkit::service::Backing;
use mercato_testkit::{TestBackend, backend_tests};
use serde_json::Value;

use crate::support::{TestApp, spawn_app, unique};

backend_tests!(spawn_app =>
    the_mailbox_pages_newest_first_with_opaque_tokens,
    bad_page_sizes_and_tokens_are_refused_with_422,
    a_customer_sees_only_their_own_messages,
    without_a_valid_token_the_mailbox_is_401,
    the_service_reports_readiness_counts_notifications_and_stops_cleanly;
    a_bad_smtp_setting_stops_start_up_naming_its_key,
);

fn subjects(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["subject"].as_str().unwrap().to_owned())
        .collect()
}

async fn the_mailbox_pages_newest_first_with_opaque_tokens(app: TestApp) {
    let user = unique("u");
    for n in 1..=5 {
        app.order_shipped(&user, &format!("o-{n}")).await;
        app.wait_for_mailbox(&user, n).await;
    }
    let mut seen = Vec::new();
    let mut query = "?page_size=2".to_owned();
    let mut sizes = Vec::new();
    loop {
        let response = app.mailbox_response(&user, &query).await;
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        sizes.push(page["items"].as_array().unwrap().len());
        seen.extend(subjects(&page));
        match page["next_page_token"].as_str() {
            Some(token) => query = format!("?page_size=2&page_token={token}"),
            None => {
                assert!(page["next_page_token"].is_null());
                break;
            }
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    let expected: Vec<String> = (1..=5)
        .rev()
        .map(|n| format!("Your order o-{n} is on its way"))
        .collect();
    assert_eq!(seen, expected);

    // Without page_size the default (20) holds all five, with no further page.
    let response = app.mailbox_response(&user, "").await;
    let page: Value = response.json().await.unwrap();
    assert_eq!(subjects(&page), expected);
    assert!(page["next_page_token"].is_null());
    let item = &page["items"][0];
    for field in ["id", "kind", "channel", "subject", "body", "created_at"] {
        assert!(item[field].is_string(), "{field} in {item}");
    }
}

async fn bad_page_sizes_and_tokens_are_refused_with_422(app: TestApp) {
    for (query, field) in [
        ("?page_size=0", "page_size"),
        ("?page_size=101", "page_size"),
        ("?page_size=ten", "page_size"),
        ("?page_size=-5", "page_size"),
        ("?page_token=not-a-token", "page_token"),
    ] {
        let response = app.mailbox_response("someone", query).await;
        let body = expect_problem(response, 422).await;
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
    let response = app.mailbox_response("someone", "?page_size=100").await;
    assert_eq!(response.status(), 200);
}

async fn a_customer_sees_only_their_own_messages(app: TestApp) {
    let (ada, bob) = (unique("ada"), unique("bob"));
    app.user_registered(&ada, &format!("{ada}@example.com"), "Ada")
        .await;
    app.user_registered(&bob, &format!("{bob}@example.com"), "Bob")
        .await;
    app.order_shipped(&ada, "o-ada").await;
    let ada_items = app.wait_for_mailbox(&ada, 2).await;
    let bob_items = app.wait_for_mailbox(&bob, 1).await;
    assert_eq!(ada_items.len(), 2);
    assert_eq!(bob_items.len(), 1);
    assert_eq!(bob_items[0]["subject"], "Welcome to Mercato, Bob");
    for item in &ada_items {
        assert_ne!(item["id"], bob_items[0]["id"]);
        assert!(!item["subject"].as_str().unwrap().contains("Bob"));
    }
    // A page token from Ada's list gives Bob nothing of hers.
    let response = app.mailbox_response(&ada, "?page_size=1").await;
    let page: Value = response.json().await.unwrap();
    let token = page["next_page_token"].as_str().unwrap().to_owned();
    let response = app.mailbox_response(&bob, &format!("?page_token={token}")).await;
    let page: Value = response.json().await.unwrap();
    assert!(
        subjects(&page)
            .iter()
            .all(|s| !s.contains("Ada") && !s.contains("o-ada")),
        "{page}"
    );
}

async fn without_a_valid_token_the_mailbox_is_401(app: TestApp) {
    let response = app.get("/api/notifications").send().await.unwrap();
    assert!(response.headers().contains_key("www-authenticate"));
    expect_problem(response, 401).await;
    let response = app.get_as("/api/notifications", "not.a.jwt").await;
    expect_problem(response, 401).await;
}

async fn the_service_reports_readiness_counts_notifications_and_stops_cleanly(mut app: TestApp) {
    let ready = app.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let user = unique("u");
    app.user_registered(&user, &format!("{user}@example.com"), "Ada")
        .await;
    app.wait_for_emails_settled(&user, 1).await;
    let expected = [
        r#"mercato_notifications_total{kind="welcome",channel="mailbox",outcome="delivered"} 1"#,
        r#"mercato_notifications_total{kind="welcome",channel="email",outcome="queued"} 1"#,
        r#"mercato_notifications_total{kind="welcome",channel="email",outcome="sent"} 1"#,
    ];
    app.wait_for_metrics("the notification metrics", &expected).await;
    // Consumers and the email worker stop with the server.
    app.stop().await.expect("the service stops cleanly");
}

async fn a_bad_smtp_setting_stops_start_up_naming_its_key(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let other = Backing::new(backend).await;
    let mut config = app.config.clone();
    config.service.database = other.settings().database;
    config.notifications.smtp.from = "not an address".into();
    let error = mercato_notifications::build(&config, other.bus().await)
        .await
        .unwrap_err();
    match error.invalid_setting() {
        Some(refused) => assert_eq!(refused.key, "notifications.smtp.from"),
        None => panic!("expected a configuration error, got {error}"),
    }
}
