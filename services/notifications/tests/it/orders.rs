//! Orders' events become messages in the customer's language, on the channels they accept.

use mercato_testkit::{TestBackend, backend_tests};
use serde_json::Value;

use crate::support::{TestApp, spawn_app, unique};

backend_tests!(spawn_app =>
    order_messages_are_rendered_in_the_customers_language,
    order_messages_in_english_name_the_total_and_the_cancel_reason,
    with_email_turned_off_order_messages_reach_the_mailbox_only;
    an_order_for_a_customer_not_known_yet_reaches_the_mailbox_in_english_without_email,
);

fn by_kind<'a>(items: &'a [Value], kind: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {items:?}"))
}

fn text(item: &Value, field: &str) -> String {
    item[field].as_str().unwrap().to_owned()
}

async fn order_messages_are_rendered_in_the_customers_language(app: TestApp) {
    let user = unique("u");
    let email = format!("{user}@example.com");
    app.customer(&user, &email, "Ada", true, "de-AT").await;
    app.order_confirmed(&user, "o-1").await;
    app.order_cancelled(&user, "o-2", "payment_declined").await;
    app.order_shipped(&user, "o-1").await;

    let items = app.wait_for_mailbox(&user, 3).await;
    assert_eq!(items.len(), 3);
    let confirmed = by_kind(&items, "order_confirmed");
    assert_eq!(confirmed["subject"], "Ihre Bestellung o-1 ist bestätigt");
    let body = text(confirmed, "body");
    assert!(body.starts_with("Hallo Ada,"), "{body}");
    assert!(body.contains("2 × Tea mug  25,00 €"), "{body}");
    assert!(body.contains("Gesamtbetrag: 25,00 €"), "{body}");
    let cancelled = by_kind(&items, "order_cancelled");
    assert_eq!(cancelled["subject"], "Ihre Bestellung o-2 wurde storniert");
    assert!(text(cancelled, "body").contains("weil die Zahlung abgelehnt wurde"));
    let shipped = by_kind(&items, "order_shipped");
    assert_eq!(shipped["subject"], "Ihre Bestellung o-1 ist unterwegs");

    let emails = app.wait_for_emails_settled(&user, 3).await;
    assert!(emails.iter().all(|e| e.state == "sent"), "{emails:?}");
    let mut subjects: Vec<String> = app.smtp.received().iter().map(|m| m.subject()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Ihre Bestellung o-1 ist bestätigt",
            "Ihre Bestellung o-1 ist unterwegs",
            "Ihre Bestellung o-2 wurde storniert",
        ]
    );
    let mail = app
        .smtp
        .received()
        .into_iter()
        .find(|m| m.subject().contains("bestätigt"))
        .unwrap();
    assert!(mail.body().contains("Gesamtbetrag: 25,00 €"), "{}", mail.body());
}

async fn order_messages_in_english_name_the_total_and_the_cancel_reason(app: TestApp) {
    let user = unique("u");
    app.customer(&user, &format!("{user}@example.com"), "Grace", true, "en")
        .await;
    app.order_confirmed(&user, "o-7").await;
    app.order_cancelled(&user, "o-8", "out_of_stock").await;

    let items = app.wait_for_mailbox(&user, 2).await;
    let confirmed = by_kind(&items, "order_confirmed");
    assert_eq!(confirmed["subject"], "Your order o-7 is confirmed");
    assert!(text(confirmed, "body").contains("Total: €25.00"));
    let cancelled = by_kind(&items, "order_cancelled");
    assert!(
        text(cancelled, "body").contains("because an item in it is out of stock."),
        "{cancelled}"
    );
}

async fn with_email_turned_off_order_messages_reach_the_mailbox_only(app: TestApp) {
    let user = unique("u");
    app.customer(&user, &format!("{user}@example.com"), "Ada", false, "en")
        .await;
    app.order_shipped(&user, "o-3").await;
    let items = app.wait_for_mailbox(&user, 1).await;
    assert_eq!(items[0]["subject"], "Your order o-3 is on its way");
    let deliveries = app.deliveries(&user).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].channel, "mailbox");
}

async fn an_order_for_a_customer_not_known_yet_reaches_the_mailbox_in_english_without_email(
    backend: TestBackend,
) {
    let app = spawn_app(backend).await;
    let user = unique("u");
    app.order_cancelled(&user, "o-4", "customer_cancelled").await;
    let items = app.wait_for_mailbox(&user, 1).await;
    assert_eq!(items[0]["subject"], "Your order o-4 has been cancelled");
    let body = text(&items[0], "body");
    assert!(body.starts_with("Hello,\n"), "{body}");
    assert!(body.contains("because you asked us to cancel it."), "{body}");
    let deliveries = app.deliveries(&user).await;
    assert_eq!(deliveries.len(), 1, "no address, no email: {deliveries:?}");
}
