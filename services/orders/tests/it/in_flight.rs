//! The orders a running saga remembers (`mercato_orders::in_flight`) are a guess checked at each
//! use: a reply decided on a remembered order that moved on since (in another process, or in a
//! transaction that rolled back) is decided again on the order as stored.

use std::sync::Arc;
use std::time::Duration;

use mercato_contracts::money::{Currency, Money};
use mercato_messaging::{Context, Outbox};
use mercato_orders::checkout::{self, Checkout, Timing};
use mercato_orders::domain::{Line, Reply, Status, Step};
use mercato_orders::projection::{Deadlines, ViewsProjection};
use mercato_storage::Db;
use mercato_testkit::{TestBackend, backend_tests};
use tokio::sync::Notify;

use crate::support::{TestApp, spawn_app_with};

backend_tests!(
    a_reply_is_decided_on_the_stored_order_when_another_process_moved_it_on,
    a_reply_after_a_rolled_back_reaction_is_decided_as_the_first_time,
    a_decision_on_a_remembered_order_that_moved_on_is_refused_and_made_again,
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

/// A checkout of its own on the service's database: another orders process, as far as what it
/// remembers goes.
async fn process(app: &TestApp) -> (Checkout, Db) {
    let db = Db::connect(app.database()).await.expect("the service's database");
    let deadlines = Deadlines {
        reserve: Duration::from_secs(600),
        payment: Duration::from_secs(600),
    };
    let checkout = Checkout::new(
        db.clone(),
        Outbox::new(),
        ViewsProjection { deadlines },
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
    assert!(new);
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
