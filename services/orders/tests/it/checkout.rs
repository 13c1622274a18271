//! The checkout saga, driven by the answers the test gives as inventory and payments: each step
//! and its compensations, and only completed steps compensated.

use mercato_contracts::inventory::{ReservationFailure, StockReservationFailed, StockReserved};
use mercato_contracts::money::{Currency, Money};
use mercato_contracts::orders::{
    ChargePayment, CommitReservation, OrderConfirmed, OrderLine, ReleaseStock, ReserveStock,
};
use mercato_contracts::payments::{PaymentCaptured, PaymentFailed, PaymentFailure};
use mercato_testkit::{TestBackend, backend_tests};

use crate::support::{spawn_for_a_customer, types_on};

backend_tests!(
    reserved_stock_and_a_captured_payment_confirm_the_order,
    a_declined_payment_cancels_and_releases_the_stock_without_a_refund,
    out_of_stock_cancels_without_charging_or_releasing,
    an_answer_delivered_twice_moves_the_saga_once,
    no_answer_from_inventory_cancels_with_reservation_timeout,
);

fn reserved(order: &str, lines: Vec<OrderLine>) -> StockReserved {
    StockReserved {
        order_id: order.into(),
        lines,
        expires_at: mercato_storage::now_millis() + 60_000,
    }
}

async fn reserved_stock_and_a_captured_payment_confirm_the_order(backend: TestBackend) {
    let (app, mut commands, (customer, token)) = spawn_for_a_customer(backend).await;
    let order = app
        .placed(&token, &[("MUG-001", 2), ("TEE-BLK-M", 1)], "tok_visa")
        .await;

    let (_, reserve) = commands.first::<ReserveStock>(&order).await;
    let lines: Vec<(String, i64)> = reserve
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    assert_eq!(lines, [("MUG-001".to_owned(), 2), ("TEE-BLK-M".to_owned(), 1)]);
    app.answer("inventory", &order, &reserved(&order, reserve.lines))
        .await;

    let (_, charge) = commands.first::<ChargePayment>(&order).await;
    assert_eq!(charge.customer_id, customer);
    assert_eq!(charge.card_token, "tok_visa");
    assert_eq!(charge.amount, Money::new(2 * 1_250 + 2_000, Currency::EUR));
    app.answer(
        "payments",
        &order,
        &PaymentCaptured {
            order_id: order.clone(),
            payment_id: "pay-1".into(),
            amount: charge.amount,
        },
    )
    .await;

    commands.first::<CommitReservation>(&order).await;
    let (_, confirmed) = commands.first::<OrderConfirmed>(&order).await;
    assert_eq!(confirmed.total.amount_minor, 4_500);
    let view = app.wait_for_status(&token, &order, "confirmed").await;
    assert_eq!(view["total"]["amount_minor"], 4_500);
    assert_eq!(view.get("cancel_reason"), None);
    assert!(
        !types_on(&commands, &order)
            .iter()
            .any(|t| t == "ReleaseStock" || t == "RefundPayment"),
        "nothing is compensated on the happy path: {:?}",
        types_on(&commands, &order)
    );
}

async fn a_declined_payment_cancels_and_releases_the_stock_without_a_refund(backend: TestBackend) {
    let (app, mut commands, (_, token)) = spawn_for_a_customer(backend).await;
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_decline").await;
    app.stock_reserved(&mut commands, &order).await;
    commands.first::<ChargePayment>(&order).await;
    app.answer(
        "payments",
        &order,
        &PaymentFailed {
            order_id: order.clone(),
            reason: PaymentFailure::Declined,
        },
    )
    .await;

    let (_, release) = commands.first::<ReleaseStock>(&order).await;
    assert_eq!(release.order_id, order);
    let view = app.wait_for_status(&token, &order, "cancelled").await;
    assert_eq!(view["cancel_reason"], "payment_declined");
    let types = types_on(&commands, &order);
    assert!(
        !types.iter().any(|t| t == "RefundPayment"),
        "nothing was captured: {types:?}"
    );
    assert!(!types.iter().any(|t| t == "CommitReservation"), "{types:?}");
}

async fn out_of_stock_cancels_without_charging_or_releasing(backend: TestBackend) {
    let (app, mut commands, (_, token)) = spawn_for_a_customer(backend).await;
    let order = app.placed(&token, &[("TEE-BLK-M", 3)], "tok_visa").await;
    commands.first::<ReserveStock>(&order).await;
    app.answer(
        "inventory",
        &order,
        &StockReservationFailed {
            order_id: order.clone(),
            reason: ReservationFailure::OutOfStock,
            sku: "TEE-BLK-M".into(),
        },
    )
    .await;
    let view = app.wait_for_status(&token, &order, "cancelled").await;
    assert_eq!(view["cancel_reason"], "out_of_stock");
    // The cancellation is the saga's last event; what came before it is all there is.
    commands
        .wait_for("OrderCancelled", |e| {
            e.stream_id == order && e.event_type == "OrderCancelled"
        })
        .await;
    let types = types_on(&commands, &order);
    for never in ["ChargePayment", "ReleaseStock", "RefundPayment"] {
        assert!(
            !types.iter().any(|t| t == never),
            "{never} for a step that never ran: {types:?}"
        );
    }
}

async fn an_answer_delivered_twice_moves_the_saga_once(backend: TestBackend) {
    let (app, mut commands, (_, token)) = spawn_for_a_customer(backend).await;
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    let (_, reserve) = commands.first::<ReserveStock>(&order).await;
    let answer = app
        .answer("inventory", &order, &reserved(&order, reserve.lines))
        .await;
    app.bus
        .publish(&answer)
        .await
        .expect("publish the same answer again");
    app.payment_captured(&mut commands, &order).await;
    app.wait_for_status(&token, &order, "confirmed").await;
    commands.first::<OrderConfirmed>(&order).await;
    let charges = types_on(&commands, &order)
        .iter()
        .filter(|t| *t == "ChargePayment")
        .count();
    assert_eq!(charges, 1, "one charge request for one reservation");
}

async fn no_answer_from_inventory_cancels_with_reservation_timeout(backend: TestBackend) {
    let (app, mut commands, (_, token)) = spawn_for_a_customer(backend).await;
    let order = app.placed(&token, &[("MUG-001", 1)], "tok_visa").await;
    commands.first::<ReserveStock>(&order).await;
    let view = app.wait_for_status(&token, &order, "cancelled").await;
    assert_eq!(view["cancel_reason"], "reservation_timeout");
    // Inventory may still hold stock it reserved after the deadline: it is told to release.
    commands.first::<ReleaseStock>(&order).await;
    assert!(!types_on(&commands, &order).iter().any(|t| t == "ChargePayment"));
}
