//! The checkout saga's stock commands over the bus: `ReserveStock`, `ReleaseStock` and
//! `CommitReservation`, each answered once through the outbox.

use mercato_contracts::inventory::{
    ReservationCommitted, ReservationFailure, StockReleased, StockReservationFailed, StockReserved,
};
use mercato_contracts::orders::{OrderLine, OrderShipped};
use mercato_testkit::{TestBackend, backend_tests};

use crate::support::{PATIENCE, far_future, order_id, spawn_for_an_order};

backend_tests!(
    reserving_holds_every_line_and_answers_stock_reserved,
    a_short_line_fails_the_whole_reservation_and_holds_nothing,
    an_unknown_product_fails_the_reservation,
    releasing_gives_the_units_back,
    committing_sells_the_held_units,
    repeated_commands_change_nothing_and_answer_once,
    other_order_events_are_ignored,
    a_malformed_command_is_parked_and_the_order_goes_on
);

async fn reserving_holds_every_line_and_answers_stock_reserved(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    let expires_at = far_future();
    let command = app
        .reserve(
            &order,
            1,
            &[("TEE-BLK-M", 1), ("mug-001", 2), ("MUG-001", 1)],
            expires_at,
        )
        .await;

    let envelope = answers.wait_for("StockReserved", |e| e.stream_id == order).await;
    assert_eq!(envelope.event_type, "StockReserved");
    assert_eq!(envelope.stream_seq, 1);
    assert_eq!(envelope.causation_id.as_deref(), Some(command.id.as_str()));
    assert_eq!(envelope.correlation_id, command.correlation_id);
    let reserved: StockReserved = envelope.decode().unwrap();
    assert_eq!(
        reserved,
        StockReserved {
            order_id: order.clone(),
            lines: vec![
                OrderLine {
                    sku: "MUG-001".into(),
                    quantity: 3
                },
                OrderLine {
                    sku: "TEE-BLK-M".into(),
                    quantity: 1
                },
            ],
            expires_at,
        }
    );
    assert_eq!(app.available("MUG-001").await, 97);
    assert_eq!(app.available("TEE-BLK-M").await, 79);
    assert_eq!(app.stock("MUG-001").await, (100, 3));
    assert_eq!(app.reservation_state(&order).await, Some("held"));
}

async fn a_short_line_fails_the_whole_reservation_and_holds_nothing(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    // MUG-001 and NOTE-A5 sort before TEE-BLK-M, so they are held before the short line fails
    // and must be given back.
    app.reserve(
        &order,
        1,
        &[("MUG-001", 5), ("NOTE-A5", 1), ("TEE-BLK-M", 81)],
        far_future(),
    )
    .await;
    let failed: StockReservationFailed = answers.for_order(&order).await;
    assert_eq!(
        failed,
        StockReservationFailed {
            order_id: order.clone(),
            reason: ReservationFailure::OutOfStock,
            sku: "TEE-BLK-M".into(),
        }
    );
    assert_eq!(app.stock("MUG-001").await, (100, 0));
    assert_eq!(app.stock("NOTE-A5").await, (150, 0));
    assert_eq!(app.stock("TEE-BLK-M").await, (80, 0));
    assert_eq!(app.reservation_state(&order).await, Some("failed"));
    assert_eq!(app.written(&order).await, ["StockReservationFailed"]);

    // Exactly what is available can be held.
    let exact = order_id();
    app.reserve(&exact, 1, &[("TEE-BLK-M", 80)], far_future()).await;
    let _: StockReserved = answers.for_order(&exact).await;
    assert_eq!(app.available("TEE-BLK-M").await, 0);
}

async fn an_unknown_product_fails_the_reservation(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    app.reserve(&order, 1, &[("MUG-001", 1), ("NO-SUCH-THING", 1)], far_future())
        .await;
    let failed: StockReservationFailed = answers.for_order(&order).await;
    assert_eq!(failed.reason, ReservationFailure::UnknownProduct);
    assert_eq!(failed.sku, "NO-SUCH-THING");

    let nonsense = order_id();
    app.reserve(&nonsense, 1, &[("not a sku!", 1)], far_future())
        .await;
    let failed: StockReservationFailed = answers.for_order(&nonsense).await;
    assert_eq!(failed.reason, ReservationFailure::UnknownProduct);
    assert_eq!(failed.sku, "not a sku!");
    assert_eq!(app.stock("MUG-001").await, (100, 0));

    // An unknown product is the answer even beside a line that is out of stock, in any order.
    for lines in [
        [("CAP-NVY", 1_000), ("ZZZ-NO-SUCH", 1)],
        [("ZZZ-NO-SUCH", 1), ("CAP-NVY", 1_000)],
    ] {
        let both = order_id();
        app.reserve(&both, 1, &lines, far_future()).await;
        let failed: StockReservationFailed = answers.for_order(&both).await;
        assert_eq!(
            (failed.reason, failed.sku.as_str()),
            (ReservationFailure::UnknownProduct, "ZZZ-NO-SUCH")
        );
    }
    assert_eq!(app.stock("CAP-NVY").await, (40, 0));
}

async fn releasing_gives_the_units_back(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    app.reserve(&order, 1, &[("CAP-NVY", 4), ("BAG-TOTE", 2)], far_future())
        .await;
    let _: StockReserved = answers.for_order(&order).await;
    assert_eq!(app.available("CAP-NVY").await, 36);

    app.release(&order, 2).await;
    let released: StockReleased = answers.for_order(&order).await;
    assert_eq!(released.cause, "released");
    assert_eq!(app.stock("CAP-NVY").await, (40, 0));
    assert_eq!(app.stock("BAG-TOTE").await, (60, 0));
    assert_eq!(app.reservation_state(&order).await, Some("released"));

    // Releasing again, or releasing what was never reserved, is a no-op.
    app.release(&order, 3).await;
    let never = order_id();
    app.release(&never, 1).await;
    app.until_applied(4).await;
    assert_eq!(app.written(&order).await, ["StockReserved", "StockReleased"]);
    assert!(app.written(&never).await.is_empty());
    assert_eq!(app.stock("CAP-NVY").await, (40, 0));
}

async fn committing_sells_the_held_units(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    app.reserve(&order, 1, &[("HOOD-GRY-L", 2)], far_future()).await;
    let _: StockReserved = answers.for_order(&order).await;
    assert_eq!(app.stock("HOOD-GRY-L").await, (30, 2));

    app.commit(&order, 2).await;
    let committed: ReservationCommitted = answers.for_order(&order).await;
    assert_eq!(committed.order_id, order);
    assert_eq!(app.stock("HOOD-GRY-L").await, (28, 0));
    assert_eq!(app.available("HOOD-GRY-L").await, 28);
    assert_eq!(app.reservation_state(&order).await, Some("committed"));

    // Sold units cannot be released back.
    app.release(&order, 3).await;
    app.until_applied(3).await;
    assert_eq!(app.stock("HOOD-GRY-L").await, (28, 0));
    assert_eq!(
        app.written(&order).await,
        ["StockReserved", "ReservationCommitted"]
    );
}

async fn repeated_commands_change_nothing_and_answer_once(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    let reserve = app.reserve(&order, 1, &[("STICK-PACK", 10)], far_future()).await;
    // The same message again (a redelivery or a republish) is the same event id.
    app.bus.publish(&reserve).await.unwrap();
    // The saga sending the command again is a new event for the same order.
    app.reserve(&order, 2, &[("STICK-PACK", 10)], far_future()).await;
    let _: StockReserved = answers.for_order(&order).await;
    app.commit(&order, 3).await;
    app.commit(&order, 4).await;
    let _: ReservationCommitted = answers.for_order(&order).await;
    app.until_applied(4).await;

    assert_eq!(
        app.written(&order).await,
        ["StockReserved", "ReservationCommitted"]
    );
    assert_eq!(app.stock("STICK-PACK").await, (490, 0));
}

async fn other_order_events_are_ignored(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    app.send(
        &order,
        1,
        &OrderShipped {
            order_id: order.clone(),
            customer_id: "c-1".into(),
        },
    )
    .await;
    // The order's stream goes on past the ignored event.
    app.reserve(&order, 2, &[("MUG-001", 1)], far_future()).await;
    let _: StockReserved = answers.for_order(&order).await;
    assert_eq!(app.written(&order).await, ["StockReserved"]);
}

async fn a_malformed_command_is_parked_and_the_order_goes_on(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    let malformed = app.reserve(&order, 1, &[("MUG-001", 0)], far_future()).await;
    let parked = mercato_testkit::eventually(PATIENCE, "the malformed command to be parked", || async {
        let letters = app.bus.dead_letters(10).await.expect("read dead letters");
        letters.into_iter().find(|l| l.envelope.id == malformed.id)
    })
    .await;
    assert_eq!(parked.group, "inventory-on-orders");
    assert!(parked.error.contains("quantity"), "{}", parked.error);
    assert_eq!(app.reservation_state(&order).await, None);

    // The stream moves past the parked command: the corrected one is served.
    app.reserve(&order, 2, &[("MUG-001", 1)], far_future()).await;
    let _: StockReserved = answers.for_order(&order).await;
    assert_eq!(app.stock("MUG-001").await, (100, 1));
}
