//! The order read model written with each append: readable as soon as the append commits,
//! guarded by the stream's version, and in agreement with the projection over the global log.

use std::sync::Arc;
use std::time::Duration;

use mercato_contracts::money::{Currency, Money};
use mercato_eventstore::{catch_up, checkpoint, rebuild, stream_version};
use mercato_messaging::{Context, Outbox};
use mercato_orders::checkout::Timing;
use mercato_orders::domain::{Line, Reply};
use mercato_orders::projection::{self, Deadlines, ViewsProjection};
use mercato_orders::store::{self, OrderView};
use mercato_orders::{Checkout, open_database};
use mercato_storage::{DatabaseConfig, Db, sqlx};
use mercato_testkit::{TestBackend, TestDatabase, backend_tests};
use tokio::sync::Notify;

backend_tests!(
    a_placed_order_is_in_the_read_model_when_the_placement_commits_without_the_projection,
    the_projection_over_the_log_agrees_with_the_rows_appends_wrote_and_never_takes_one_back,
    a_row_behind_its_stream_is_replayed_by_the_next_append,
    a_projection_batch_skips_the_rows_it_holds_and_folds_a_row_that_is_missing,
    the_row_holds_when_each_step_happened_and_rows_from_before_get_it_from_the_stream,
);

const VIEWS: ViewsProjection = ViewsProjection {
    deadlines: Deadlines {
        reserve: Duration::from_secs(30),
        payment: Duration::from_secs(5),
    },
};

/// Orders' operations on a fresh database, with no projection runner: only appends write rows.
pub struct Orders {
    pub db: Db,
    pub checkout: Checkout,
    _database: TestDatabase,
}

/// Orders' operations on a fresh database with the saga's usual step deadlines.
pub async fn orders(backend: TestBackend) -> Orders {
    orders_with(backend, VIEWS).await
}

/// [`orders`] with the saga's step deadlines of `views`.
pub async fn orders_with(backend: TestBackend, views: ViewsProjection) -> Orders {
    let database = TestDatabase::new(backend).await;
    let db = open_database(&DatabaseConfig {
        url: database.url().to_owned(),
        ..DatabaseConfig::default()
    })
    .await
    .expect("open orders' database");
    let checkout = Checkout::new(
        db.clone(),
        Outbox::new(),
        views,
        Arc::new(Notify::new()),
        Timing {
            reservation_ttl: Duration::from_secs(120),
        },
    );
    Orders {
        db,
        checkout,
        _database: database,
    }
}

impl Orders {
    pub async fn place(&self, customer: &str) -> String {
        let mug = Line {
            sku: "MUG-001".into(),
            name: "Mug".into(),
            quantity: 2,
            unit_price: Money::new(1_250, Currency::parse("EUR").unwrap()),
        };
        let (order, new) = self
            .checkout
            .place(customer, vec![mug], "tok_visa", None, &Context::default())
            .await
            .expect("place");
        assert!(new.is_some());
        order
    }

    async fn answer(&self, order: &str, reply: Reply) {
        let mut tx = self.db.begin().await.unwrap();
        assert!(
            self.checkout
                .react_in(&mut tx, order, reply, &Context::default())
                .await
                .expect("react")
                .is_some()
        );
        tx.commit().await.unwrap();
    }

    pub async fn row(&self, order: &str) -> OrderView {
        store::view(self.db.pool(), order)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("order {order} has no row"))
    }

    async fn head(&self, order: &str) -> i64 {
        stream_version(self.db.pool(), order).await.unwrap()
    }

    /// The order's row, which must hold every event of its stream.
    async fn row_at_head(&self, order: &str) -> OrderView {
        let row = self.row(order).await;
        assert_eq!(
            row.version,
            self.head(order).await,
            "the row of {order} holds every event of its stream"
        );
        row
    }

    async fn projection_checkpoint(&self) -> i64 {
        checkpoint(self.db.pool(), projection::NAME).await.unwrap()
    }
}

async fn a_placed_order_is_in_the_read_model_when_the_placement_commits_without_the_projection(
    backend: TestBackend,
) {
    let orders = orders(backend).await;

    let order = orders.place("cust-1").await;

    let row = orders.row_at_head(&order).await;
    assert_eq!(
        (row.status.as_str(), row.step.as_str(), row.customer_id.as_str()),
        ("pending", "reserving", "cust-1")
    );
    assert_eq!(row.total.amount_minor, 2_500);
    assert!(row.deadline_at.is_some(), "the reservation's deadline is set");

    orders.answer(&order, Reply::StockReserved).await;
    let row = orders.row_at_head(&order).await;
    assert_eq!(
        (row.step.as_str(), row.payment_status.as_str()),
        ("charging", "pending")
    );

    orders.checkout.cancel(&order, &Context::default()).await.unwrap();
    let row = orders.row_at_head(&order).await;
    assert_eq!(row.status, "cancelled");
    assert_eq!(row.cancel_reason.as_deref(), Some("customer_cancelled"));
    assert_eq!(
        orders.projection_checkpoint().await,
        0,
        "no projection ran: the appends wrote the rows"
    );
    orders.db.close().await;
}

async fn the_projection_over_the_log_agrees_with_the_rows_appends_wrote_and_never_takes_one_back(
    backend: TestBackend,
) {
    let orders = orders(backend).await;
    let confirmed = orders.place("cust-1").await;
    let cancelled = orders.place("cust-2").await;
    orders.answer(&confirmed, Reply::StockReserved).await;
    orders.answer(&confirmed, Reply::PaymentCaptured).await;
    orders
        .checkout
        .cancel(&cancelled, &Context::default())
        .await
        .unwrap();
    let written = [
        orders.row_at_head(&confirmed).await,
        orders.row_at_head(&cancelled).await,
    ];
    assert_eq!(written[0].status, "confirmed");
    assert_eq!(written[1].status, "cancelled");

    let events = orders.head(&confirmed).await + orders.head(&cancelled).await;
    assert_eq!(
        catch_up(&orders.db, &VIEWS, 3).await.unwrap(),
        u64::try_from(events).unwrap()
    );
    assert_eq!(
        [orders.row(&confirmed).await, orders.row(&cancelled).await],
        written,
        "replaying every event over rows that hold them changes nothing"
    );

    let mut older = written[0].clone();
    older.version = 1;
    older.status = "pending".into();
    let mut tx = orders.db.begin().await.unwrap();
    store::upsert(&mut tx, &older).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        orders.row(&confirmed).await,
        written[0],
        "an older version never overwrites a newer row"
    );

    rebuild(&orders.db, &VIEWS).await.unwrap();
    assert_eq!(
        [orders.row(&confirmed).await, orders.row(&cancelled).await],
        written,
        "rebuilt from the log, the rows are what the appends wrote"
    );
    orders.db.close().await;
}

async fn a_row_behind_its_stream_is_replayed_by_the_next_append(backend: TestBackend) {
    let orders = orders(backend).await;
    let order = orders.place("cust-1").await;
    orders.answer(&order, Reply::StockReserved).await;
    // A row the projection had not reached yet, or one from before appends wrote rows.
    sqlx::query("DELETE FROM order_views WHERE order_id = $1")
        .bind(&order)
        .execute(orders.db.pool())
        .await
        .unwrap();

    orders.answer(&order, Reply::PaymentCaptured).await;

    let row = orders.row_at_head(&order).await;
    assert_eq!(
        (row.status.as_str(), row.payment_status.as_str()),
        ("confirmed", "captured")
    );
    rebuild(&orders.db, &VIEWS).await.unwrap();
    assert_eq!(
        orders.row(&order).await,
        row,
        "the replayed row is the one the whole log gives"
    );
    orders.db.close().await;
}

async fn a_projection_batch_skips_the_rows_it_holds_and_folds_a_row_that_is_missing(backend: TestBackend) {
    let orders = orders(backend).await;
    let held = orders.place("cust-1").await;
    let missing = orders.place("cust-2").await;
    for order in [&held, &missing] {
        orders.answer(order, Reply::StockReserved).await;
        orders.answer(order, Reply::PaymentCaptured).await;
    }
    let written = [
        orders.row_at_head(&held).await,
        orders.row_at_head(&missing).await,
    ];
    // A row the appends never wrote (kept from before they did): only the log can give it.
    sqlx::query("DELETE FROM order_views WHERE order_id = $1")
        .bind(&missing)
        .execute(orders.db.pool())
        .await
        .unwrap();

    // One batch holds both orders' events, interleaved: the held row's are skipped, the
    // missing row is folded from its placement on.
    let events = orders.head(&held).await + orders.head(&missing).await;
    assert_eq!(
        catch_up(&orders.db, &VIEWS, 100).await.unwrap(),
        u64::try_from(events).unwrap()
    );
    assert_eq!(
        [orders.row(&held).await, orders.row(&missing).await],
        written,
        "the missing row is what the appends had written"
    );
    orders.db.close().await;
}

async fn the_row_holds_when_each_step_happened_and_rows_from_before_get_it_from_the_stream(
    backend: TestBackend,
) {
    let orders = orders(backend).await;
    let confirmed = orders.place("cust-1").await;
    orders.answer(&confirmed, Reply::StockReserved).await;
    orders.answer(&confirmed, Reply::PaymentCaptured).await;
    let cancelled = orders.place("cust-1").await;
    orders
        .answer(
            &cancelled,
            Reply::StockReservationFailed {
                unknown_product: false,
            },
        )
        .await;

    // Each time is the first event of its kind in the stream.
    let first_of = |events: &[mercato_eventstore::RecordedEvent], event_type: &str| {
        events
            .iter()
            .find(|e| e.envelope.event_type == event_type)
            .map(|e| e.recorded_at)
    };
    let mut rows = Vec::new();
    for order in [&confirmed, &cancelled] {
        let row = orders.row_at_head(order).await;
        let events = mercato_eventstore::read_stream(orders.db.pool(), order)
            .await
            .unwrap();
        let times = [row.reserved_at, row.paid_at, row.confirmed_at, row.cancelled_at];
        let expected = [
            "StockReserved",
            "PaymentCaptured",
            "OrderConfirmed",
            "OrderCancelled",
        ]
        .map(|event_type| first_of(&events, event_type));
        assert_eq!(times, expected, "{row:?}");
        assert_eq!(row.created_at, events[0].recorded_at);
        rows.push(row);
    }
    assert!(rows[0].confirmed_at.is_some() && rows[0].cancelled_at.is_none());
    assert!(rows[1].cancelled_at.is_some() && rows[1].reserved_at.is_none());

    // Rows written before the read model kept the times: the migration fills them.
    sqlx::query(
        "UPDATE order_views SET reserved_at = NULL, paid_at = NULL, confirmed_at = NULL, cancelled_at = NULL",
    )
    .execute(orders.db.pool())
    .await
    .unwrap();
    sqlx::raw_sql(store::TIMELINE_BACKFILL)
        .execute(orders.db.pool())
        .await
        .unwrap();
    for (order, row) in [&confirmed, &cancelled].into_iter().zip(&rows) {
        assert_eq!(&orders.row(order).await, row);
    }
}
