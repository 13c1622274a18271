//! Exactly-once effects: a redelivered event, a mail server that says "later", one that never
//! accepts, two workers on one database, and a worker that vanished mid-send.

use std::sync::Arc;
use std::time::Duration;

use mercato_messaging::inbox::Outcome;
use mercato_messaging::{ConsumerMetrics, ConsumerSpec, Inbox, InboxConfig};
use mercato_notifications::delivery::Worker;
use mercato_notifications::domain::{Channel, Kind, Locale};
use mercato_notifications::events::Notifier;
use mercato_notifications::metrics::NotificationMetrics;
use mercato_notifications::store::{self, NewNotification};
use mercato_runtime::{CancellationToken, Registry};
use mercato_storage::{DatabaseConfig, Db, now_millis, sqlx};
use mercato_testkit::{TestBackend, TestDatabase, backend_tests, eventually};
use tokio::sync::Notify;

use crate::smtp_sink::SmtpSink;
use crate::support::{MAX_ATTEMPTS, PATIENCE, TestApp, smtp_config, spawn_app, unique};

backend_tests!(spawn_app =>
    an_event_delivered_twice_gives_one_message_and_one_email,
    an_email_refused_twice_with_451_is_sent_once_on_the_third_attempt;
    an_email_the_server_always_refuses_fails_after_max_attempts_and_is_never_accepted,
    two_workers_on_one_database_send_each_email_exactly_once,
    a_vanished_worker_is_resent_only_if_it_stopped_before_the_point_of_no_return,
);

async fn an_event_delivered_twice_gives_one_message_and_one_email(app: TestApp) {
    let user = unique("u");
    app.customer(&user, &format!("{user}@example.com"), "Ada", true, "en")
        .await;
    // A relay that crashed before marking its row publishes the same event again.
    let envelope = app.order_shipped(&user, "o-1").await;
    app.republish(&envelope).await;
    app.wait_for_mailbox(&user, 1).await;
    app.wait_for_emails_settled(&user, 1).await;

    // Beyond the bus: the inbox forgets it handled the event (a restored backup, a replayed
    // dead letter), so the handler itself runs a second time.
    sqlx::query("DELETE FROM inbox_processed WHERE event_id = $1")
        .bind(&envelope.id)
        .execute(app.db.pool())
        .await
        .expect("forget the event");
    let mut registry = Registry::default();
    let notifier = Notifier::new(
        true,
        Arc::new(Notify::new()),
        NotificationMetrics::register(&mut registry),
    );
    let inbox = Inbox::new(
        app.db.clone(),
        app.bus.clone(),
        ConsumerSpec {
            group: "notifications-on-orders".into(),
            category: "orders".into(),
            event_types: Vec::new(),
        },
        notifier,
        InboxConfig::default(),
        ConsumerMetrics::register(&mut registry),
    );
    let outcome = inbox.apply(&envelope, 1).await.expect("the handler runs again");
    assert_eq!(outcome, Outcome::Applied);

    assert_eq!(app.mailbox(&user).await.len(), 1);
    let deliveries = app.deliveries(&user).await;
    assert_eq!(
        deliveries.len(),
        2,
        "one mailbox row and one email row: {deliveries:?}"
    );
    let emails = app.emails(&user).await;
    assert_eq!(emails[0].state, "sent");
    assert_eq!(emails[0].attempts, 1);
    assert_eq!(app.smtp.received().len(), 1);
}

async fn an_email_refused_twice_with_451_is_sent_once_on_the_third_attempt(app: TestApp) {
    app.smtp.refuse_next(2);
    let user = unique("u");
    app.user_registered(&user, &format!("{user}@example.com"), "Ada")
        .await;

    let emails = app.wait_for_emails_settled(&user, 1).await;
    assert_eq!(emails[0].state, "sent", "{emails:?}");
    assert_eq!(emails[0].attempts, 3);
    assert_eq!(emails[0].last_error, None);
    assert_eq!(app.smtp.attempts(), 3);
    assert_eq!(app.smtp.received().len(), 1);
    let log = store::attempts(&app.db, &emails[0].id).await.expect("the log");
    let outcomes: Vec<&str> = log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retry", "retry", "sent"]);
    assert!(log[0].error.as_deref().unwrap().contains("451"), "{log:?}");
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
}

async fn an_email_the_server_always_refuses_fails_after_max_attempts_and_is_never_accepted(
    backend: TestBackend,
) {
    let app = spawn_app(backend).await;
    app.smtp.refuse_always(true);
    let user = unique("u");
    app.user_registered(&user, &format!("{user}@example.com"), "Ada")
        .await;

    let emails = app.wait_for_emails_settled(&user, 1).await;
    assert_eq!(emails[0].state, "failed", "{emails:?}");
    assert_eq!(emails[0].attempts, i64::from(MAX_ATTEMPTS));
    assert!(emails[0].last_error.as_deref().unwrap().contains("451"));
    assert_eq!(emails[0].sent_at, None);
    assert_eq!(app.smtp.attempts(), MAX_ATTEMPTS as usize);
    assert!(app.smtp.received().is_empty());
    let log = store::attempts(&app.db, &emails[0].id).await.expect("the log");
    let outcomes: Vec<&str> = log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retry", "retry", "failed"]);
    // The mailbox copy is unaffected.
    assert_eq!(app.mailbox(&user).await.len(), 1);
}

/// A database with notifications' schema and no service running on it.
async fn bare_database(backend: TestBackend) -> (TestDatabase, Db) {
    let database = TestDatabase::new(backend).await;
    let db = mercato_kit::builder::open_database(
        mercato_notifications::NAME,
        &DatabaseConfig {
            url: database.url().into(),
            ..DatabaseConfig::default()
        },
        store::MIGRATIONS,
    )
    .await
    .expect("open the database");
    (database, db)
}

async fn queue_email(db: &Db, to: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let event_id = uuid::Uuid::new_v4().to_string();
    let mut tx = db.begin().await.expect("begin");
    let written = store::insert_notification(
        &mut tx,
        &NewNotification {
            id: &id,
            event_id: &event_id,
            channel: Channel::Email,
            customer_id: "c-1",
            kind: Kind::OrderShipped,
            locale: Locale::En,
            recipient: Some(to),
            subject: "Your order is on its way",
            body: "Hello,\n\nit is.\n",
            now: now_millis(),
        },
    )
    .await
    .expect("queue an email");
    assert!(written);
    tx.commit().await.expect("commit");
    id
}

fn worker(db: &Db, sink: &SmtpSink) -> Worker {
    let mut registry = Registry::default();
    Worker::new(
        db.clone(),
        smtp_config(sink.port()),
        Duration::from_millis(10),
        Arc::new(Notify::new()),
        NotificationMetrics::register(&mut registry),
    )
}

async fn two_workers_on_one_database_send_each_email_exactly_once(backend: TestBackend) {
    let (_database, db) = bare_database(backend).await;
    let sink = SmtpSink::start().await;
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(queue_email(&db, &format!("customer-{n}@example.com")).await);
    }
    let shutdown = CancellationToken::new();
    let replicas = [worker(&db, &sink), worker(&db, &sink)].map(|w| tokio::spawn(w.run(shutdown.clone())));
    eventually(PATIENCE, "every email to be sent", || async {
        let sent = store::deliveries(&db, "c-1").await.ok()?;
        sent.iter().all(|d| d.state == "sent").then_some(())
    })
    .await;
    shutdown.cancel();
    for replica in replicas {
        replica.await.expect("the worker stops");
    }
    let received = sink.received();
    assert_eq!(received.len(), 40);
    assert_eq!(sink.attempts(), 40, "no email was attempted twice");
    let mut message_ids: Vec<String> = received.iter().filter_map(|m| m.header("Message-ID")).collect();
    message_ids.sort();
    message_ids.dedup();
    assert_eq!(message_ids.len(), 40);
    for d in store::deliveries(&db, "c-1").await.expect("deliveries") {
        assert_eq!(d.attempts, 1, "{d:?}");
    }
}

async fn a_vanished_worker_is_resent_only_if_it_stopped_before_the_point_of_no_return(backend: TestBackend) {
    let (_database, db) = bare_database(backend).await;
    let sink = SmtpSink::start().await;
    let committing = queue_email(&db, "a@example.com").await;
    let preparing = queue_email(&db, "b@example.com").await;

    // A worker claims both with a lease that has already run out, begins ending the first
    // message's text, and dies.
    let now = now_millis();
    for id in [&committing, &preparing] {
        let job = store::claim(&db, id, "dead-worker", now, now - 1)
            .await
            .expect("claim");
        assert!(job.is_some());
        let again = store::claim(&db, id, "other-worker", now, now + 60_000)
            .await
            .expect("claim again");
        assert_eq!(
            again, None,
            "a claimed email cannot be claimed again while sending"
        );
    }
    assert!(
        store::mark_committing(&db, &committing, "dead-worker")
            .await
            .unwrap()
    );

    let recovered = store::recover_stale(&db, now_millis(), i64::from(MAX_ATTEMPTS))
        .await
        .expect("recover");
    assert_eq!(recovered.len(), 2);
    assert!(
        !store::mark_committing(&db, &preparing, "dead-worker")
            .await
            .unwrap(),
        "the dead worker's claim is void"
    );

    worker(&db, &sink)
        .pass(&CancellationToken::new())
        .await
        .expect("a pass");
    let deliveries = store::deliveries(&db, "c-1").await.expect("deliveries");
    let state_of = |id: &str| deliveries.iter().find(|d| d.id == id).unwrap().clone();
    let unknown = state_of(&committing);
    assert_eq!(unknown.state, "failed");
    assert_eq!(unknown.last_error.as_deref(), Some(store::OUTCOME_UNKNOWN));
    let resent = state_of(&preparing);
    assert_eq!(resent.state, "sent");
    assert_eq!(resent.attempts, 2);
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].to, ["b@example.com"]);
    let log = store::attempts(&db, &preparing).await.expect("the log");
    let outcomes: Vec<&str> = log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retry", "sent"]);
}
