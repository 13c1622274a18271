//! Holds that run out are released by the sweeper on their own; committing one afterwards takes
//! the units again if they are still there.

use mercato_contracts::inventory::{
    ReservationCommitted, ReservationFailure, StockReleased, StockReservationFailed, StockReserved,
};
use mercato_storage::now_millis;
use mercato_testkit::{TestBackend, backend_tests, eventually};

use crate::support::{PATIENCE, TestApp, far_future, order_id, spawn_app, spawn_for_an_order};

backend_tests!(spawn_app =>
    a_hold_that_runs_out_is_released_on_its_own;
    committing_an_expired_hold_takes_the_units_again,
    committing_an_expired_hold_whose_units_are_gone_fails,
);

/// A hold that runs out shortly after it is made.
fn soon() -> i64 {
    now_millis() + 300
}

async fn a_hold_that_runs_out_is_released_on_its_own(mut app: TestApp) {
    // Two replicas, two sweepers racing for the same reservation: it is released once.
    app.start_replica().await;
    let mut answers = app.answers().await;
    let order = order_id();
    let lasting = order_id();
    app.reserve(&order, 1, &[("BOOK-RUST", 5)], soon()).await;
    app.reserve(&lasting, 1, &[("BOOK-RUST", 1)], far_future()).await;
    let _: StockReserved = answers.for_order(&order).await;

    let released: StockReleased = answers.for_order(&order).await;
    assert_eq!(released.cause, "expired");
    let envelope = answers
        .wait_for("the expiry", |e| {
            e.stream_id == order && e.event_type == "StockReleased"
        })
        .await;
    assert_eq!(
        envelope.correlation_id.as_deref(),
        Some(format!("corr-{order}").as_str()),
        "the release joins the order's trace"
    );
    eventually(PATIENCE, "the units to be back", || async {
        (app.stock("BOOK-RUST").await == (25, 1)).then_some(())
    })
    .await;
    assert_eq!(app.reservation_state(&order).await, Some("expired"));
    assert_eq!(app.reservation_state(&lasting).await, Some("held"));

    // An expired hold cannot be released again.
    app.release(&order, 2).await;
    app.until_applied(3).await;
    assert_eq!(app.written(&order).await, ["StockReserved", "StockReleased"]);
}

async fn committing_an_expired_hold_takes_the_units_again(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    app.reserve(&order, 1, &[("CAP-NVY", 3)], soon()).await;
    let released: StockReleased = answers.for_order(&order).await;
    assert_eq!(released.cause, "expired");
    assert_eq!(app.stock("CAP-NVY").await, (40, 0));

    app.commit(&order, 2).await;
    let _: ReservationCommitted = answers.for_order(&order).await;
    assert_eq!(app.stock("CAP-NVY").await, (37, 0));
    assert_eq!(app.reservation_state(&order).await, Some("committed"));
}

async fn committing_an_expired_hold_whose_units_are_gone_fails(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    app.reserve(&order, 1, &[("BAG-TOTE", 50)], soon()).await;
    let _: StockReleased = answers.for_order(&order).await;
    // Meanwhile another order takes most of the units.
    let other = order_id();
    app.reserve(&other, 1, &[("BAG-TOTE", 20)], far_future()).await;
    let _: StockReserved = answers.for_order(&other).await;

    app.commit(&order, 2).await;
    let failed: StockReservationFailed = answers.for_order(&order).await;
    assert_eq!(failed.reason, ReservationFailure::OutOfStock);
    assert_eq!(failed.sku, "BAG-TOTE");
    assert_eq!(app.stock("BAG-TOTE").await, (60, 20));
    assert_eq!(app.reservation_state(&order).await, Some("failed"));
}
