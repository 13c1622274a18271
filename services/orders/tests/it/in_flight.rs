//! The orders a running saga remembers (`mercato_orders::in_flight`) are a guess checked at each
//! use: a reply decided on a remembered order that moved on since (in another process, or in a
//! transaction that rolled back) is decided again on the order as stored.

use std::sync::Arc;
use std::time::Duration;

use mercato_contracts::inventory::StockReserved;
use mercato_contracts::money::{Currency, Money};
use mercato_contracts::orders::OrderLine;
use mercato_messaging::{Context, Envelope, Handler as _, Outbox};
use mercato_orders::checkout::{self, Checkout, Timing};
use mercato_orders::domain::{Line, Reply, Status, Step};
use mercato_orders::projection::{Deadlines, ViewsProjection};
use mercato_orders::saga::OnAnswers;
use mercato_orders::store;
use mercato_storage::Db;
use mercato_testkit::{TestBackend, backend_tests};
use tokio::sync::Notify;

use crate::support::{TestApp, spawn_app_with};

backend_tests!(
    a_reply_is_decided_on_the_stored_order_when_another_process_moved_it_on,
    a_reply_after_a_rolled_back_reaction_is_decided_as_the_first_time,
    a_decision_on_a_remembered_order_that_moved_on_is_refused_and_made_again,
    a_reaction_whose_transaction_rolled_back_is_forgotten,
    the_row_a_remembered_order_carries_is_the_row_stored,
    a_row_known_at_another_version_is_read_instead,
);

/// The service (for its migrated database) with deadlines no test here reaches, so its own
/// timer leaves the orders alone.
async fn app(backend: TestBackend) -> TestApp {
    spawn_app_with(backend, |saga| {
        saga.reserve_timeout_ms = 600_000;
        saga.payment_timeout_ms = 600_000;
        saga.reservation_ttl_ms = 1_800_000;
    })
    .await
}

/// The read model as the service keeps it, with the deadlines of [`app`].
fn projection() -> ViewsProjection {
    ViewsProjection {
        deadlines: Deadlines {
            reserve: Duration::from_secs(600),
            payment: Duration::from_secs(600),
        },
    }
}

/// A checkout of its own on the service's database: another orders process, as far as what it
/// remembers goes.
async fn process(app: &TestApp) -> (Checkout, Db) {
    let db = Db::connect(app.database()).await.expect("the service's database");
    let checkout = Checkout::new(
        db.clone(),
        Outbox::new(),
        projection(),
        Arc::new(Notify::new()),
        Timing {
            reservation_ttl: Duration::from_secs(1_800),
        },
    );
    (checkout, db)
}

async fn placed(checkout: &Checkout) -> String {
    let lines = vec![Line {
        sku: "MUG-001".into(),
        name: "Mug".into(),
        quantity: 1,
        unit_price: Money::new(1_250, Currency::EUR),
    }];
    let (order_id, new) = checkout
        .place("c1", lines, "tok_visa", None, &Context::default())
        .await
        .expect("placed");
    assert!(new.is_some());
    order_id
}

async fn react(checkout: &Checkout, db: &Db, order_id: &str, reply: Reply, commit: bool) -> bool {
    let mut tx = db.begin().await.unwrap();
    let decided = checkout
        .react_in(&mut tx, order_id, reply, &Context::default())
        .await
        .expect("reacted");
    if commit {
        tx.commit().await.unwrap();
    }
    decided.is_some()
}

async fn a_reply_is_decided_on_the_stored_order_when_another_process_moved_it_on(backend: TestBackend) {
    let app = app(backend).await;
    let (first, db) = process(&app).await;
    let (second, _) = process(&app).await;
    let order_id = placed(&first).await;
    assert_eq!(first.remembered(), 1, "the placing process remembers the order");

    // The other process takes the reservation: the first still remembers the order reserving.
    assert!(react(&second, &db, &order_id, Reply::StockReserved, true).await);
    // Reserving, the remembered order would not act on a captured payment; as stored, it is
    // charging and confirms.
    assert!(react(&first, &db, &order_id, Reply::PaymentCaptured, true).await);

    let order = checkout::load(db.pool(), &order_id).await.unwrap().unwrap();
    assert_eq!(order.status, Status::Confirmed);
    assert_eq!(order.version, 7, "placed 2, reserved 2, confirmed 3: {order:?}");
    assert_eq!(first.remembered(), 0, "a saga that is done is forgotten");
}

async fn a_reply_after_a_rolled_back_reaction_is_decided_as_the_first_time(backend: TestBackend) {
    let app = app(backend).await;
    let (checkout, db) = process(&app).await;
    let order_id = placed(&checkout).await;

    // The reaction's transaction rolls back (a failure later in the inbox's batch): the process
    // remembers the order charging, which was never stored.
    assert!(react(&checkout, &db, &order_id, Reply::StockReserved, false).await);
    // Delivered again, the answer moves the saga as it would have the first time, instead of
    // being taken for a duplicate by the remembered order.
    assert!(react(&checkout, &db, &order_id, Reply::StockReserved, true).await);

    let order = checkout::load(db.pool(), &order_id).await.unwrap().unwrap();
    assert_eq!(order.step, Step::Charging);
    assert_eq!(order.version, 4, "{order:?}");
}

async fn a_decision_on_a_remembered_order_that_moved_on_is_refused_and_made_again(backend: TestBackend) {
    let app = app(backend).await;
    let (first, db) = process(&app).await;
    let (second, _) = process(&app).await;
    let order_id = placed(&first).await;

    // The customer cancels through the other process while the stock is being reserved.
    second
        .cancel(&order_id, &Context::default())
        .await
        .expect("cancelled");
    // Remembered as reserving, the order would charge; its append is refused, and the order as
    // stored (cancelled) releases the late reservation instead.
    assert!(react(&first, &db, &order_id, Reply::StockReserved, true).await);

    let order = checkout::load(db.pool(), &order_id).await.unwrap().unwrap();
    assert_eq!(order.status, Status::Cancelled);
    assert!(order.stock_held && order.release_requested, "{order:?}");
    assert_ne!(order.step, Step::Charging, "{order:?}");
}

/// Inventory's answer that the order's one line is held, as the inbox hands it to the saga.
fn stock_reserved(order_id: &str) -> Envelope {
    let answer = StockReserved {
        order_id: order_id.into(),
        lines: vec![OrderLine {
            sku: "MUG-001".into(),
            quantity: 1,
        }],
        expires_at: mercato_storage::now_millis() + 60_000,
    };
    let mut envelope = Envelope::new("inventory", order_id, &answer, &Context::default()).unwrap();
    envelope.stream_seq = 1;
    envelope
}

async fn a_reaction_whose_transaction_rolled_back_is_forgotten(backend: TestBackend) {
    let app = app(backend).await;
    let (checkout, db) = process(&app).await;
    let checkout = Arc::new(checkout);
    let order_id = placed(&checkout).await;
    let saga = OnAnswers::new(Arc::clone(&checkout));
    let answer = stock_reserved(&order_id);

    // The inbox applies the answer, then its batch rolls back and it says so.
    let mut tx = db.begin().await.unwrap();
    saga.handle(&answer, &mut tx).await.expect("handled");
    drop(tx);
    saga.rolled_back();
    // The order as that transaction left it (charging, version 4) was never stored; another
    // process may reach version 4 with other events, which the append's check cannot tell apart.
    assert_eq!(checkout.remembered(), 0, "the rolled-back order is forgotten");

    let mut tx = db.begin().await.unwrap();
    saga.handle(&answer, &mut tx).await.expect("handled again");
    tx.commit().await.unwrap();
    saga.committed();
    let order = checkout::load(db.pool(), &order_id).await.unwrap().unwrap();
    assert_eq!((order.step, order.version), (Step::Charging, 4), "{order:?}");
    assert_eq!(checkout.remembered(), 1);
}

async fn the_row_a_remembered_order_carries_is_the_row_stored(backend: TestBackend) {
    let app = app(backend).await;
    let (checkout, db) = process(&app).await;
    let order_id = placed(&checkout).await;
    // Reserved, then captured: each reply is decided and its row written from what the process
    // remembers, without reading the row back.
    assert!(react(&checkout, &db, &order_id, Reply::StockReserved, true).await);
    let charging = store::view(db.pool(), &order_id).await.unwrap().unwrap();
    assert_eq!((charging.step.as_str(), charging.version), ("charging", 4));
    assert!(
        charging.deadline_at.is_some(),
        "the charge's deadline: {charging:?}"
    );
    assert!(react(&checkout, &db, &order_id, Reply::PaymentCaptured, true).await);

    let row = store::view(db.pool(), &order_id).await.unwrap().unwrap();
    let mut tx = db.begin().await.unwrap();
    store::clear(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    let events = mercato_eventstore::read_stream(db.pool(), &order_id)
        .await
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    let replayed = projection().apply_appended(&mut tx, &events, None).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        replayed.as_ref(),
        Some(&row),
        "the row written step by step is the row the stream folds to"
    );
    assert_eq!((row.status.as_str(), row.version), ("confirmed", 7));
}

async fn a_row_known_at_another_version_is_read_instead(backend: TestBackend) {
    let app = app(backend).await;
    let (checkout, db) = process(&app).await;
    let order_id = placed(&checkout).await;
    assert!(react(&checkout, &db, &order_id, Reply::StockReserved, true).await);
    let charging = store::view(db.pool(), &order_id).await.unwrap().unwrap();

    // The reservation's events (versions 3 and 4) offered with a row that claims version 3, not
    // the version before them, and holds what the stored row does not: it is not taken, the
    // stored row is read, and it already holds both events.
    let events = mercato_eventstore::read_stream(db.pool(), &order_id)
        .await
        .unwrap();
    let stale = store::OrderView {
        customer_id: "someone else".into(),
        version: 3,
        ..charging.clone()
    };
    let mut tx = db.begin().await.unwrap();
    let row = projection()
        .apply_appended(&mut tx, &events[2..], Some(&stale))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        row.as_ref(),
        Some(&charging),
        "the stored row, not one folded on another"
    );
}
