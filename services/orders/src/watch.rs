//! Waiting for an order to change, for the long poll of `GET /api/orders/{id}`: a waiter holds a
//! [`Watch`] on the order's id and is woken when the read model's row of that order changed.
//!
//! The wake comes from the `orders.views` projection after its batch committed
//! ([`Announcing`]), never before: a waiter woken early would read the old row and sleep through
//! the change. Each wake names the latest version of the order announced so far, and the latest
//! that changed its status, so a waiter reads the row when it starts and again only when a
//! version it has not read was announced (one waiting for another status: a status change it
//! has not read); nothing polls the database. Only orders someone waits for take room, and at most `capacity`
//! of them at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mercato_eventstore::{Applied, AppliedAll, Projection, RecordedEvent};
use mercato_storage::Tx;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// The orders someone waits for, each with the signal its waiters sleep on.
#[derive(Debug)]
pub struct Changes {
    watched: Mutex<HashMap<String, Slot>>,
    capacity: usize,
    gauge: Gauge,
}

#[derive(Debug)]
struct Slot {
    signal: Arc<Signal>,
    watchers: usize,
}

/// What the waiters of one order sleep on, and the latest version of it announced.
#[derive(Debug, Default)]
struct Signal {
    notify: Notify,
    /// 0 until a change of the order is announced while it is watched.
    announced: AtomicI64,
    /// The latest version announced that changed the order's status; 0 until one is.
    status_announced: AtomicI64,
}

/// What an announcement says of one order: the version its row has reached, at least, and the
/// latest version among them that changed its status (0 if none did).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    pub version: i64,
    pub status_version: i64,
}

impl Reached {
    fn include(&mut self, event: &RecordedEvent) {
        self.version = self.version.max(event.version);
        if crate::events::changes_status(&event.envelope.event_type) {
            self.status_version = self.status_version.max(event.version);
        }
    }
}

impl Changes {
    /// Room for waiters on up to `capacity` orders at once, counted in `registry`.
    #[must_use]
    pub fn new(capacity: usize, registry: &mut Registry) -> Arc<Self> {
        let gauge = Gauge::default();
        registry.register(
            "orders_watched",
            "Orders that long polls of GET /api/orders/{id} are waiting on",
            gauge.clone(),
        );
        Arc::new(Self {
            watched: Mutex::default(),
            capacity,
            gauge,
        })
    }

    fn count(&self, slots: &HashMap<String, Slot>) {
        self.gauge.set(i64::try_from(slots.len()).unwrap_or(i64::MAX));
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // The map stays consistent whatever panicked while holding it: each change is one call.
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts watching `order_id`; `None` when `capacity` orders are watched already.
    #[must_use]
    pub fn watch(self: &Arc<Self>, order_id: &str) -> Option<Watch> {
        let mut slots = self.slots();
        if !slots.contains_key(order_id) && slots.len() >= self.capacity {
            return None;
        }
        let slot = slots.entry(order_id.to_owned()).or_insert_with(|| Slot {
            signal: Arc::default(),
            watchers: 0,
        });
        slot.watchers += 1;
        let signal = Arc::clone(&slot.signal);
        self.count(&slots);
        Some(Watch {
            changes: Arc::clone(self),
            order_id: order_id.to_owned(),
            signal,
        })
    }

    /// Wakes everyone waiting for one of `orders`, each with what its row has reached.
    pub fn changed<'a>(&self, orders: impl IntoIterator<Item = (&'a str, Reached)>) {
        let slots = self.slots();
        if slots.is_empty() {
            return;
        }
        for (order_id, reached) in orders {
            if let Some(slot) = slots.get(order_id) {
                let signal = &slot.signal;
                signal
                    .status_announced
                    .fetch_max(reached.status_version, Ordering::AcqRel);
                signal.announced.fetch_max(reached.version, Ordering::AcqRel);
                signal.notify.notify_waiters();
            }
        }
    }

    /// How many orders are watched now.
    #[must_use]
    pub fn watched(&self) -> usize {
        self.slots().len()
    }
}

/// A waiter's hold on one order; the order is forgotten when its last watch is dropped.
#[derive(Debug)]
pub struct Watch {
    changes: Arc<Changes>,
    order_id: String,
    signal: Arc<Signal>,
}

impl Watch {
    /// The next change. Enable it (`Notified::enable`) before reading the order, so a change
    /// between the read and the wait still wakes it.
    pub fn changed(&self) -> Notified<'_> {
        self.signal.notify.notified()
    }

    /// True when a version after `read` was announced: the row read at `read` is out of date.
    #[must_use]
    pub fn newer_than(&self, read: i64) -> bool {
        self.signal.announced.load(Ordering::Acquire) > read
    }

    /// True when a change of status after `read` was announced: the status read at `read` is
    /// out of date.
    #[must_use]
    pub fn status_newer_than(&self, read: i64) -> bool {
        self.signal.status_announced.load(Ordering::Acquire) > read
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut slots = self.changes.slots();
        if let Some(slot) = slots.get_mut(&self.order_id) {
            slot.watchers -= 1;
            if slot.watchers == 0 {
                slots.remove(&self.order_id);
                self.changes.count(&slots);
            }
        }
    }
}

/// A projection that tells [`Changes`] which orders its committed batches touched.
///
/// Batches of one projection never overlap (each holds the checkpoint until it commits), but the
/// next may start applying between a commit and its `committed` call, and so be announced before
/// it is visible. Each announcement therefore repeats the one before: a waiter woken too early
/// reads the old row, sleeps again, and is woken once more after its batch committed.
#[derive(Debug)]
pub struct Announcing<P> {
    inner: P,
    changes: Arc<Changes>,
    touched: Mutex<Touched>,
}

#[derive(Debug, Default)]
struct Touched {
    /// Orders applied since the last announcement, with what they reached. A batch that rolls
    /// back leaves its orders here: a waiter woken for nothing reads its order again and sleeps
    /// on.
    current: HashMap<String, Reached>,
    /// The orders of the last announcement, announced again with the next.
    previous: HashMap<String, Reached>,
}

impl Touched {
    fn applied(&mut self, event: &RecordedEvent) {
        self.current
            .entry(event.envelope.stream_id.clone())
            .or_default()
            .include(event);
    }
}

impl<P> Announcing<P> {
    pub fn new(inner: P, changes: Arc<Changes>) -> Self {
        Self {
            inner,
            changes,
            touched: Mutex::default(),
        }
    }
}

impl<P: Projection> Projection for Announcing<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a RecordedEvent) -> Applied<'a> {
        self.touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .applied(event);
        self.inner.apply(tx, event)
    }

    fn apply_all<'a>(&'a self, tx: &'a mut Tx, events: &'a [RecordedEvent]) -> AppliedAll<'a> {
        let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        for event in events {
            touched.applied(event);
        }
        drop(touched);
        self.inner.apply_all(tx, events)
    }

    fn reset<'a>(&'a self, tx: &'a mut Tx) -> Applied<'a> {
        self.inner.reset(tx)
    }

    fn committed(&self) {
        let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        let current = std::mem::take(&mut touched.current);
        let earlier = std::mem::replace(&mut touched.previous, current);
        let announced = touched.previous.iter().chain(earlier.iter());
        self.changes
            .changed(announced.map(|(order_id, &reached)| (order_id.as_str(), reached)));
        drop(touched);
        self.inner.committed();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_waiters_of_that_order_only() {
        let changes = Changes::new(10, &mut Registry::default());
        let first = changes.watch("a").unwrap();
        let other = changes.watch("b").unwrap();
        let mut woken = std::pin::pin!(first.changed());
        woken.as_mut().enable();
        let mut asleep = std::pin::pin!(other.changed());
        asleep.as_mut().enable();
        changes.changed([("a", reached(2, 0))]);
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("the waiter of a is woken");
        assert!(
            futures_util::FutureExt::now_or_never(asleep).is_none(),
            "the waiter of b sleeps on"
        );
    }

    struct Nothing;

    impl Projection for Nothing {
        fn name(&self) -> &'static str {
            "nothing"
        }

        fn apply<'a>(&'a self, _: &'a mut Tx, _: &'a RecordedEvent) -> Applied<'a> {
            Box::pin(async { Ok(()) })
        }

        fn reset<'a>(&'a self, _: &'a mut Tx) -> Applied<'a> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn an_order_announced_before_its_batch_committed_is_announced_again_after() {
        let changes = Changes::new(10, &mut Registry::default());
        let projection = Announcing::new(Nothing, Arc::clone(&changes));
        let watch = changes.watch("b").unwrap();
        // The next batch applied "b" between the last commit and its announcement.
        projection
            .touched
            .lock()
            .unwrap()
            .current
            .insert("b".into(), reached(3, 0));
        projection.committed();
        // The waiter, woken too early, read the old row and sleeps again.
        let mut again = std::pin::pin!(watch.changed());
        again.as_mut().enable();
        projection.committed();
        tokio::time::timeout(Duration::from_secs(5), again)
            .await
            .expect("woken again once its batch committed");
    }

    #[test]
    fn a_watch_knows_whether_a_version_it_has_not_read_was_announced() {
        let changes = Changes::new(10, &mut Registry::default());
        let watch = changes.watch("a").unwrap();
        assert!(!watch.newer_than(0), "nothing announced yet");
        changes.changed([("a", reached(4, 0)), ("b", reached(9, 9))]);
        assert!(watch.newer_than(3));
        assert!(!watch.newer_than(4), "version 4 was read");
        // A repeated, older announcement does not take the version back.
        changes.changed([("a", reached(2, 0))]);
        assert!(!watch.newer_than(4));
        assert!(watch.newer_than(3));
    }

    fn reached(version: i64, status_version: i64) -> Reached {
        Reached {
            version,
            status_version,
        }
    }

    #[test]
    fn a_watch_knows_whether_a_change_of_status_it_has_not_read_was_announced() {
        let changes = Changes::new(10, &mut Registry::default());
        let watch = changes.watch("a").unwrap();
        changes.changed([("a", reached(5, 0))]);
        assert!(watch.newer_than(3));
        assert!(!watch.status_newer_than(3), "no change of status yet");
        changes.changed([("a", reached(8, 7))]);
        assert!(watch.status_newer_than(6));
        assert!(!watch.status_newer_than(7), "the status of version 7 was read");
        changes.changed([("a", reached(9, 0))]);
        assert!(
            !watch.status_newer_than(8),
            "a later version without a change of status"
        );
    }

    fn event(version: i64, event_type: &str) -> RecordedEvent {
        let shipped = mercato_contracts::orders::OrderShipped {
            order_id: "o1".into(),
            customer_id: "c1".into(),
        };
        let mut envelope = mercato_messaging::Envelope::new(
            "orders",
            "o1",
            &shipped,
            &mercato_messaging::Context::default(),
        )
        .unwrap();
        event_type.clone_into(&mut envelope.event_type);
        RecordedEvent {
            position: version,
            version,
            recorded_at: 0,
            envelope,
        }
    }

    #[test]
    fn an_announcement_names_the_latest_version_and_the_latest_change_of_status() {
        use mercato_messaging::Event as _;
        let mut touched = Touched::default();
        touched.applied(&event(3, mercato_contracts::orders::ChargePayment::TYPE));
        touched.applied(&event(4, mercato_contracts::orders::OrderConfirmed::TYPE));
        touched.applied(&event(5, mercato_contracts::orders::CommitReservation::TYPE));
        assert_eq!(touched.current["o1"], reached(5, 4));
    }

    #[test]
    fn watched_orders_are_bounded_and_forgotten_with_their_last_watch() {
        let changes = Changes::new(2, &mut Registry::default());
        let a = changes.watch("a").unwrap();
        let a_again = changes.watch("a").unwrap();
        let b = changes.watch("b").unwrap();
        assert!(changes.watch("c").is_none(), "a third order is past capacity");
        assert!(
            changes.watch("b").is_some(),
            "another waiter of a watched order fits"
        );
        drop(a);
        assert_eq!(changes.watched(), 2, "a still has a watcher");
        drop(a_again);
        drop(b);
        assert_eq!(changes.watched(), 0);
        assert!(changes.watch("c").is_some());
    }
}
