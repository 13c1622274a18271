//! Many orders racing for little stock, on two replicas of the service: never oversold.

use std::time::Duration;

use futures_util::future::join_all;
use mercato_contracts::inventory::{ReservationFailure, StockReservationFailed};
use mercato_testkit::{TestBackend, backend_tests};

use crate::support::{PATIENCE, far_future, order_id, spawn_app};

backend_tests!(fifty_orders_for_ten_units_get_exactly_ten);

async fn fifty_orders_for_ten_units_get_exactly_ten(backend: TestBackend) {
    let mut app = spawn_app(backend).await;
    app.start_replica().await;
    assert_eq!(app.addrs().len(), 2);
    app.set_stock("MUG-001", 10).await;
    let mut answers = app.answers().await;

    let orders: Vec<String> = (0..50).map(|_| order_id()).collect();
    let expires_at = far_future();
    join_all(
        orders
            .iter()
            .map(|order| app.reserve(order, 1, &[("MUG-001", 1)], expires_at)),
    )
    .await;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last_reserved = 0;
    let results = loop {
        // Whenever we look, what is held never passes what is there.
        let (on_hand, reserved) = app.stock("MUG-001").await;
        assert!(reserved <= on_hand, "reserved {reserved} > on hand {on_hand}");
        assert!(reserved >= last_reserved, "holds are only ever added here");
        last_reserved = reserved;
        let answered: Vec<_> = answers
            .seen
            .iter()
            .filter(|e| orders.contains(&e.stream_id))
            .cloned()
            .collect();
        if answered.len() >= orders.len() {
            break answered;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} orders answered",
            answered.len(),
            orders.len()
        );
        answers.read(Duration::from_millis(200)).await;
    };

    assert_eq!(results.len(), 50, "one answer per order");
    let reserved = results.iter().filter(|e| e.event_type == "StockReserved").count();
    let failed: Vec<StockReservationFailed> = results
        .iter()
        .filter(|e| e.event_type == "StockReservationFailed")
        .map(|e| e.decode().unwrap())
        .collect();
    assert_eq!(reserved, 10);
    assert_eq!(failed.len(), 40);
    assert!(failed.iter().all(|f| f.reason == ReservationFailure::OutOfStock));
    assert_eq!(app.available("MUG-001").await, 0);
    assert_eq!(app.stock("MUG-001").await, (10, 10));
    for order in &orders {
        assert_eq!(app.written(order).await.len(), 1, "one answer for {order}");
    }
}
