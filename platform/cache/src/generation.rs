//! Generation stamps: how a load that raced an invalidation is kept out of the cache.
//!
//! An invalidation moves the counter of its key's stripe; a clear moves the epoch. A load takes
//! the stamp of its key before it starts, and an entry is good only while its stamp is still
//! current. Keys share stripes, so an invalidation may also cost a neighbour one extra load;
//! that is the price of bounded memory.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};

const STRIPES: usize = 1024;

/// Where a key's invalidations stood at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    epoch: u64,
    stripe: u64,
}

impl Stamp {
    /// Whether `self` is at least as recent as `earlier` for this key (the counters only grow).
    pub(crate) fn not_before(self, earlier: Self) -> bool {
        self.epoch >= earlier.epoch && self.stripe >= earlier.stripe
    }
}

#[derive(Debug)]
pub(crate) struct Generations {
    epoch: AtomicU64,
    stripes: Box<[AtomicU64]>,
    hasher: RandomState,
}

impl Generations {
    pub(crate) fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        let slot = usize::try_from(self.hasher.hash_one(key) % STRIPES as u64).unwrap_or(0);
        &self.stripes[slot]
    }

    pub(crate) fn stamp(&self, key: &str) -> Stamp {
        Stamp {
            epoch: self.epoch.load(Ordering::SeqCst),
            stripe: self.stripe(key).load(Ordering::SeqCst),
        }
    }

    pub(crate) fn invalidate(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalidation_or_a_clear_outdates_a_stamp() {
        let generations = Generations::new();
        let before = generations.stamp("MUG-001");
        assert_eq!(generations.stamp("MUG-001"), before);

        generations.invalidate("MUG-001");
        let after_invalidation = generations.stamp("MUG-001");
        assert_ne!(after_invalidation, before);
        assert!(after_invalidation.not_before(before));
        assert!(!before.not_before(after_invalidation));

        generations.clear();
        let after_clear = generations.stamp("MUG-001");
        assert_ne!(after_clear, after_invalidation);
        assert!(after_clear.not_before(after_invalidation));
    }

    #[test]
    fn a_clear_outdates_every_key() {
        let generations = Generations::new();
        let keys: Vec<String> = (0..50).map(|n| format!("key-{n}")).collect();
        let before: Vec<Stamp> = keys.iter().map(|k| generations.stamp(k)).collect();
        generations.clear();
        for (key, stamp) in keys.iter().zip(before) {
            assert_ne!(generations.stamp(key), stamp, "{key}");
        }
    }
}
