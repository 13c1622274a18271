//! Identity's `UserRegistered` becomes a welcome message.

use mercato_testkit::{TestBackend, backend_tests};

use crate::support::{TestApp, spawn_app, unique};

backend_tests!(spawn_app =>
    a_registration_puts_a_welcome_in_the_mailbox_and_sends_it_by_email;
    a_customer_who_turned_email_off_gets_the_welcome_in_the_mailbox_only_in_their_language,
    with_smtp_disabled_the_welcome_reaches_the_mailbox_and_no_email_is_queued,
);

async fn a_registration_puts_a_welcome_in_the_mailbox_and_sends_it_by_email(app: TestApp) {
    let user = unique("u");
    let email = format!("{user}@example.com");
    app.user_registered(&user, &email, "Ada").await;

    let items = app.wait_for_mailbox(&user, 1).await;
    assert_eq!(items.len(), 1);
    let welcome = &items[0];
    assert_eq!(welcome["kind"], "welcome");
    assert_eq!(welcome["channel"], "mailbox");
    assert_eq!(welcome["subject"], "Welcome to Mercato, Ada");
    assert!(welcome["body"].as_str().unwrap().starts_with("Hello Ada,"));
    assert!(welcome["created_at"].as_str().unwrap().ends_with('Z'));

    let emails = app.wait_for_emails_settled(&user, 1).await;
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].state, "sent");
    assert_eq!(emails[0].attempts, 1);
    assert!(emails[0].sent_at.is_some());
    assert_eq!(emails[0].recipient.as_deref(), Some(email.as_str()));
    let received = app.smtp.received();
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert_eq!(mail.from, "no-reply@mercato.test");
    assert_eq!(mail.to, [email.as_str()]);
    assert_eq!(mail.subject(), "Welcome to Mercato, Ada");
    assert_eq!(mail.header("To").as_deref(), Some(email.as_str()));
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{}@mercato.test>", emails[0].id))
    );
    assert!(mail.body().starts_with("Hello Ada,\r\n\r\n"), "{}", mail.body());
}

async fn a_customer_who_turned_email_off_gets_the_welcome_in_the_mailbox_only_in_their_language(
    backend: TestBackend,
) {
    let app = spawn_app(backend).await;
    let user = unique("u");
    let email = format!("{user}@example.com");
    app.customer(&user, &email, "Ada", false, "de").await;
    app.user_registered(&user, &email, "Ada").await;

    let items = app.wait_for_mailbox(&user, 1).await;
    assert_eq!(items[0]["subject"], "Willkommen bei Mercato, Ada");
    assert!(items[0]["body"].as_str().unwrap().starts_with("Hallo Ada,"));
    // The email row would have been written in the same transaction as the mailbox row.
    let deliveries = app.deliveries(&user).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].channel, "mailbox");
    assert_eq!(deliveries[0].state, "delivered");
}

async fn with_smtp_disabled_the_welcome_reaches_the_mailbox_and_no_email_is_queued(backend: TestBackend) {
    let app =
        crate::support::spawn_app_with(backend, |config| config.notifications.smtp.enabled = false).await;
    let user = unique("u");
    app.user_registered(&user, &format!("{user}@example.com"), "Ada")
        .await;
    let items = app.wait_for_mailbox(&user, 1).await;
    assert_eq!(items[0]["kind"], "welcome");
    let deliveries = app.deliveries(&user).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].channel, "mailbox");
    app.wait_for_metrics(
        "the metrics to count the skipped email",
        &[r#"mercato_notifications_total{kind="welcome",channel="email",outcome="skipped"} 1"#],
    )
    .await;
}
