//! The saga's backlog: orders placed and not yet confirmed or cancelled, and the admission of new
//! ones against `[orders] max_orders_in_flight`.
//!
//! Past the bound a new order is refused before any work is done for it (`503` with
//! `Retry-After`), so the orders already accepted still finish within their steps' deadlines
//! instead of every order finishing late (the SRE book's "Handling Overload").
//!
//! The gauge is the read model's count of pending orders, taken at start, every `recount`
//! interval and whenever admission finds the backlog full after placements finished, plus the
//! placements under way. A placement that commits while the count runs may be counted twice, never
//! missed, so the gauge errs towards refusing; the recount at a refusal settles it. Counting from
//! the shared database keeps every instance's gauge the backlog of the whole service, whichever
//! instance placed or ended an order. Admission itself reads and bumps one atomic.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use mercato_runtime::resilience::register_metrics;
use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Db, StorageError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Mutex;

/// The backlog and its bound.
#[derive(Debug)]
pub struct Backlog {
    db: Db,
    limit: i64,
    /// What admission compares with the bound: pending orders as last counted, plus placements.
    in_flight: Gauge,
    /// Placements admitted whose `place` has not returned yet.
    under_way: AtomicI64,
    /// Placements that created an order, ever; a count started after one of them sees its order.
    finished: AtomicU64,
    /// `finished` when the last count started: a count only helps a refusal once it moved.
    counted: AtomicU64,
    counting: Mutex<()>,
    refused: Counter,
}

/// A placement that was let in. Dropping it gives its place back unless [`Admission::placed`]
/// said an order was created, which then counts until it ends.
#[derive(Debug)]
pub struct Admission {
    backlog: Arc<Backlog>,
    placed: bool,
}

impl Admission {
    /// A new order was created: it stays in the backlog until it ends.
    pub fn placed(mut self) {
        self.placed = true;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let backlog = &self.backlog;
        // Finished before no longer under way, so a count in between sees it twice, not never.
        if self.placed {
            backlog.finished.fetch_add(1, Ordering::AcqRel);
        } else {
            backlog.in_flight.dec();
        }
        backlog.under_way.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Backlog {
    /// A backlog of the orders in `db`, bounded by `limit`, with its metrics in `registry`.
    #[must_use]
    pub fn new(db: Db, limit: u64, registry: &mut Registry) -> Arc<Self> {
        let backlog = Self {
            db,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            in_flight: Gauge::default(),
            under_way: AtomicI64::new(0),
            finished: AtomicU64::new(0),
            counted: AtomicU64::new(0),
            counting: Mutex::new(()),
            refused: Counter::default(),
        };
        register_metrics!(registry, {
            backlog.in_flight => "orders_in_flight", "Orders placed and not yet confirmed or cancelled, as admission counts them";
            backlog.refused => "orders_refused", "Orders refused with 503 because the backlog was at orders.max_orders_in_flight";
        });
        Arc::new(backlog)
    }

    fn try_admit(self: &Arc<Self>) -> Option<Admission> {
        // Under way before it counts, so a count in between sees it twice, not never.
        self.under_way.fetch_add(1, Ordering::AcqRel);
        let admitted = self
            .in_flight
            .inner()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.under_way.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission {
            backlog: Arc::clone(self),
            placed: false,
        })
    }

    /// Lets one placement in, or `None` when the backlog is at its bound. A full backlog is
    /// counted again first if placements finished since the last count.
    pub async fn admit(self: &Arc<Self>) -> Option<Admission> {
        if let Some(admission) = self.try_admit() {
            return Some(admission);
        }
        if self.finished.load(Ordering::Acquire) != self.counted.load(Ordering::Acquire) {
            if let Err(error) = self.recount().await {
                tracing::warn!(%error, "backlog not recounted before refusing");
            }
            if let Some(admission) = self.try_admit() {
                return Some(admission);
            }
        }
        self.refused.inc();
        None
    }

    /// Orders in flight, as admission sees them.
    #[must_use]
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Counts the pending orders again.
    ///
    /// # Errors
    /// The database failed; the gauge keeps its value.
    pub async fn recount(&self) -> Result<(), StorageError> {
        let _one_at_a_time = self.counting.lock().await;
        let finished_before = self.finished.load(Ordering::Acquire);
        self.counted.store(finished_before, Ordering::Release);
        let pending = pending_orders(&self.db).await?;
        let under_way = self.under_way.load(Ordering::Acquire);
        let finished_since = self.finished.load(Ordering::Acquire) - finished_before;
        self.in_flight
            .set(pending + under_way + i64::try_from(finished_since).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// Pending orders in the read model, through the partial index over pending rows.
async fn pending_orders(db: &Db) -> Result<i64, StorageError> {
    let row = sqlx::query("SELECT COUNT(*) AS pending FROM order_views WHERE status = 'pending'")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get("pending")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admission_stops_at_the_bound_and_a_failed_placement_gives_its_place_back() {
        let config = mercato_storage::DatabaseConfig {
            url: "sqlite::memory:".into(),
            ..mercato_storage::DatabaseConfig::default()
        };
        let db = Db::connect(&config).await.expect("an in-memory database");
        let backlog = Backlog::new(db, 2, &mut Registry::default());
        let first = backlog.try_admit().expect("room for one");
        let second = backlog.try_admit().expect("room for two");
        assert!(backlog.try_admit().is_none(), "the third is past the bound");
        drop(first);
        assert_eq!(backlog.in_flight(), 1, "a placement that failed leaves");
        second.placed();
        assert_eq!(backlog.in_flight(), 1, "a placed order stays until it ends");
        assert_eq!(backlog.under_way.load(Ordering::Acquire), 0);
        assert_eq!(backlog.finished.load(Ordering::Acquire), 1);
    }
}
