//! The deliveries a connection holds and has not settled, and the keeper that keeps them held.
//!
//! The ack wait only has to notice a holder that is gone (a crashed process), so it is short; a
//! handler that takes longer, or a message waiting its turn in a fetched batch, must not be handed
//! to another member meanwhile. Each backend's keeper renews what is in hand a few times per ack
//! wait (the embedded claim's visibility, a JetStream progress ack). A delivery dropped without
//! being settled leaves the set, so its claim lapses after one ack wait, as a crash's would.
//!
//! A renewal must never reach the broker after the delivery was settled: a JetStream progress ack
//! that follows a delayed nak restarts the whole ack wait instead of the delay. So a delivery
//! leaves the set before it is settled, and waits for a renewal pass under way to send what it
//! has taken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::AbortHandle;

/// How often a keeper renews what is in hand: three times per ack wait, so one late renewal
/// still lands in time.
pub(crate) fn renewal_interval(ack_wait: Duration) -> Duration {
    (ack_wait / 3).max(Duration::from_millis(10))
}

/// What one connection holds, by delivery.
#[derive(Debug)]
pub(crate) struct InHand<T> {
    next: AtomicU64,
    held: Mutex<HashMap<u64, T>>,
    /// Held by a renewal pass while it sends, and by a settlement while it leaves the set.
    renewal: tokio::sync::Mutex<()>,
}

impl<T: Clone> InHand<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            next: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            renewal: tokio::sync::Mutex::new(()),
        })
    }

    /// Holds `item` until the returned guard is settled or dropped.
    pub(crate) fn hold(self: &Arc<Self>, item: T) -> Held<T> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, item);
        Held {
            set: Arc::clone(self),
            key,
        }
    }

    /// What is held right now.
    pub(crate) fn items(&self) -> Vec<T> {
        self.lock().values().cloned().collect()
    }

    /// A renewal pass: nothing settles while the guard lives.
    pub(crate) async fn renewing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.renewal.lock().await
    }
}

impl<T> InHand<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, T>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One delivery in hand; it leaves the set when dropped.
pub(crate) struct Held<T> {
    set: Arc<InHand<T>>,
    key: u64,
}

impl<T> std::fmt::Debug for Held<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<T> Held<T> {
    /// Leaves the set before the delivery is settled, once no renewal of it can still be sent.
    pub(crate) async fn settle(&self) {
        let _renewal = self.set.renewal.lock().await;
        self.set.lock().remove(&self.key);
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.key);
    }
}

/// A connection's keeper task, stopped when the connection's last clone goes: a bus dropped
/// without shutting down renews nothing more, as a crashed process would not.
#[derive(Debug)]
pub(crate) struct Keeper(AbortHandle);

impl Keeper {
    pub(crate) fn spawn<F>(work: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self(tokio::spawn(work).abort_handle())
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_leaves_the_set_when_its_guard_goes() {
        let set = InHand::new();
        let first = set.hold("a");
        let second = set.hold("b");
        let mut items = set.items();
        items.sort_unstable();
        assert_eq!(items, ["a", "b"]);
        drop(first);
        assert_eq!(set.items(), ["b"]);
        drop(second);
        assert!(set.items().is_empty());
    }

    #[test]
    fn renewals_come_three_times_per_ack_wait() {
        assert_eq!(renewal_interval(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(
            renewal_interval(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
    }
}
