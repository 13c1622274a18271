//! What a handler keeps about the events of the inbox's open transaction until it commits, so
//! that what it counts or announces is what committed: a batch that rolls back and is applied
//! again is counted once.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// One entry per [`crate::Handler::handle`] call (possibly empty), dropped by `rolled_back`
/// (the latest first), handed over by `committed`. A handler with one of these is per worker
/// ([`crate::Handler::for_worker`]): each worker's transactions are its own.
#[derive(Debug)]
pub struct UntilCommit<T> {
    entries: Mutex<Vec<Option<T>>>,
}

impl<T> Default for UntilCommit<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
        }
    }
}

impl<T> UntilCommit<T> {
    fn entries(&self) -> MutexGuard<'_, Vec<Option<T>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What one `handle` call keeps; `None` when it keeps nothing (or failed).
    pub fn handled(&self, entry: Option<T>) {
        self.entries().push(entry);
    }

    /// The latest `handle`'s effects were undone: what it kept, if anything.
    pub fn rolled_back(&self) -> Option<T> {
        self.entries().pop().flatten()
    }

    /// The transaction committed: what its handled events kept, in order.
    pub fn committed(&self) -> Vec<T> {
        std::mem::take(&mut *self.entries())
            .into_iter()
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_back_event_drops_only_its_own_entry() {
        let kept = UntilCommit::default();
        kept.handled(Some(1));
        kept.handled(None);
        kept.handled(Some(3));
        assert_eq!(kept.rolled_back(), Some(3));
        assert_eq!(kept.rolled_back(), None);
        kept.handled(Some(4));
        assert_eq!(kept.committed(), [1, 4]);
        assert!(kept.committed().is_empty(), "handed over once");
    }
}
