//! The checkout funnel's read of the event log goes through the index by time on both backends,
//! as each database's own planner says.

use mercato_orders::store::FUNNEL_EVENTS;
use mercato_storage::Backend;
use mercato_storage::sqlx::{self, Row as _};
use mercato_testkit::{TestBackend, backend_tests};

use crate::read_model::orders;

backend_tests!(the_funnel_reads_recent_events_through_the_index_by_time,);

async fn the_funnel_reads_recent_events_through_the_index_by_time(backend: TestBackend) {
    let orders = orders(backend).await;
    let db = &orders.db;
    let mut tx = db.begin().await.unwrap();
    let explain = if db.backend() == Backend::Postgres {
        // A fresh table is small enough that a scan is cheapest; with scans priced out, the
        // plan shows whether the index can serve the query at all.
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .unwrap();
        format!("EXPLAIN {FUNNEL_EVENTS}")
    } else {
        format!("EXPLAIN QUERY PLAN {FUNNEL_EVENTS}")
    };
    let rows = sqlx::query(&explain)
        .bind(0_i64)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = rows
        .iter()
        .flat_map(|row| (0..row.len()).filter_map(|i| row.try_get::<String, _>(i).ok()))
        .collect();
    tx.rollback().await.unwrap();
    assert!(
        plan.iter().any(|line| line.contains("events_recorded_at")),
        "the funnel scans the log: {plan:?}"
    );
}
