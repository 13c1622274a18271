//! Who to wake when a message is published in this process: each consumer group member and
//! subscription registers the category (and, for a group of some types, the event types) it
//! reads, and a publish wakes only those that can read what it stored.
//!
//! Every waiter that wakes looks at the bus file, so waking all of them on every publish (a
//! dozen groups and subscriptions in `mercato up`) costs a dozen reads for the one or two that
//! have something to claim. Messages that become visible again (a nak's delay, a lapsed run's
//! claims) and other processes' publishes are still found by each waiter's poll.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Notify;

use crate::envelope::Envelope;

/// The waiters of one bus, by what they read.
#[derive(Debug, Default)]
pub(super) struct Wakers {
    interests: Mutex<Vec<Interest>>,
}

#[derive(Debug)]
struct Interest {
    category: String,
    /// Empty for every type.
    event_types: Vec<String>,
    /// Gone with the last clone of the member or subscription that registered it.
    signal: Weak<Notify>,
}

impl Interest {
    fn reads(&self, envelope: &Envelope) -> bool {
        self.category == envelope.category()
            && (self.event_types.is_empty() || self.event_types.contains(&envelope.event_type))
    }
}

impl Wakers {
    /// The signal a reader of `category` (of `event_types`, or every type when empty) waits on.
    pub(super) fn register(&self, category: &str, event_types: &[String]) -> Arc<Notify> {
        let signal = Arc::new(Notify::new());
        let mut interests = self.lock();
        interests.retain(|i| i.signal.strong_count() > 0);
        interests.push(Interest {
            category: category.to_owned(),
            event_types: event_types.to_vec(),
            signal: Arc::downgrade(&signal),
        });
        signal
    }

    /// Wakes the waiting readers of any of `envelopes`, just stored.
    pub(super) fn published<'a>(&self, envelopes: impl IntoIterator<Item = &'a Envelope> + Clone) {
        for interest in self.lock().iter() {
            if envelopes.clone().into_iter().any(|e| interest.reads(e))
                && let Some(signal) = interest.signal.upgrade()
            {
                signal.notify_waiters();
            }
        }
    }

    /// Wakes every waiting reader: messages of any kind may have become claimable.
    pub(super) fn all(&self) {
        for interest in self.lock().iter() {
            if let Some(signal) = interest.signal.upgrade() {
                signal.notify_waiters();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Interest>> {
        // Each change is one push or retain: the list is whole whatever panicked.
        self.interests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn envelope(category: &str, event_type: &str) -> Envelope {
        let mut envelope = crate::bus::tests::envelope(serde_json::Value::Null);
        category.clone_into(&mut envelope.source);
        event_type.clone_into(&mut envelope.event_type);
        envelope
    }

    /// Whether `signal` was notified while a waiter was registered on it.
    async fn woken(signal: &Notify, wake: impl FnOnce()) -> bool {
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        wake();
        tokio::time::timeout(Duration::from_millis(50), notified)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_publish_wakes_only_the_readers_of_its_category_and_types() {
        let wakers = Wakers::default();
        let charges = wakers.register("orders", &["ChargePayment".into()]);
        let every_order = wakers.register("orders", &[]);
        let products = wakers.register("products", &[]);
        let placed = [envelope("orders", "OrderPlaced")];
        let charge = [envelope("orders", "ChargePayment")];

        assert!(!woken(&charges, || wakers.published(&placed)).await);
        assert!(woken(&every_order, || wakers.published(&placed)).await);
        assert!(!woken(&products, || wakers.published(&placed)).await);
        assert!(woken(&charges, || wakers.published(&charge)).await);
        assert!(woken(&products, || wakers.all()).await);
    }

    #[tokio::test]
    async fn a_reader_that_is_gone_leaves_the_list() {
        let wakers = Wakers::default();
        drop(wakers.register("orders", &[]));
        let kept = wakers.register("orders", &[]);
        assert_eq!(wakers.lock().len(), 1);
        assert!(woken(&kept, || wakers.published(&[envelope("orders", "OrderPlaced")])).await);
    }
}
