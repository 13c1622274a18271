//! The saga timer after a restart: a step whose deadline passed while no orders process ran
//! gets its whole time again, so a crash delays an order and never cancels it; a deadline that
//! passes while the timer runs is acted on at once.

use std::time::Duration;

use mercato_orders::projection::{Deadlines, ViewsProjection};
use mercato_storage::sqlx;
use mercato_testkit::{PATIENCE, TestBackend, backend_tests, eventually};

use crate::read_model::{Orders, orders_with};

backend_tests!(
    a_deadline_that_passed_before_the_timer_started_waits_a_whole_step_from_the_start,
    a_deadline_that_passes_while_the_timer_runs_cancels_at_once,
);

const STEP: Duration = Duration::from_millis(300);
const AN_HOUR_MS: i64 = 3_600_000;

async fn set_deadline(orders: &Orders, order: &str, at: i64) {
    sqlx::query("UPDATE order_views SET deadline_at = $1 WHERE order_id = $2")
        .bind(at)
        .bind(order)
        .execute(orders.db.pool())
        .await
        .unwrap();
}

async fn a_deadline_that_passed_before_the_timer_started_waits_a_whole_step_from_the_start(
    backend: TestBackend,
) {
    let orders = orders_with(
        backend,
        ViewsProjection {
            deadlines: Deadlines {
                reserve: STEP,
                payment: STEP,
            },
        },
    )
    .await;
    let order = orders.place("cust-1").await;
    // As if the process had been down for an hour with the order waiting for inventory.
    set_deadline(&orders, &order, mercato_storage::now_millis() - AN_HOUR_MS).await;

    assert_eq!(orders.checkout.expire_overdue().await.unwrap(), 0);
    assert_eq!(
        orders.row(&order).await.status,
        "pending",
        "not cancelled by the downtime"
    );

    // A step that still gets no answer is timed out once it has had its time since the start.
    eventually(
        PATIENCE,
        "the step times out a whole step after the start",
        || async { (orders.checkout.expire_overdue().await.unwrap() == 1).then_some(()) },
    )
    .await;
    let row = orders.row(&order).await;
    assert_eq!(
        (row.status.as_str(), row.cancel_reason.as_deref()),
        ("cancelled", Some("reservation_timeout"))
    );
    orders.db.close().await;
}

async fn a_deadline_that_passes_while_the_timer_runs_cancels_at_once(backend: TestBackend) {
    let orders = orders_with(
        backend,
        ViewsProjection {
            deadlines: Deadlines {
                reserve: Duration::from_secs(30),
                payment: Duration::from_secs(30),
            },
        },
    )
    .await;
    let order = orders.place("cust-1").await;
    // Placed after the timer started, so its deadline cannot have passed during a downtime.
    let placed_at = orders.row(&order).await.created_at;
    set_deadline(&orders, &order, placed_at).await;

    assert_eq!(orders.checkout.expire_overdue().await.unwrap(), 1);
    let row = orders.row(&order).await;
    assert_eq!(
        (row.status.as_str(), row.cancel_reason.as_deref()),
        ("cancelled", Some("reservation_timeout"))
    );
    orders.db.close().await;
}
