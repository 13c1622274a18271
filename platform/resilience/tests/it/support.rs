use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mercato_resilience::ResilienceError;

/// The error the test services fail with.
pub type TestError = ResilienceError<&'static str>;

/// Counts the calls that reached a test service.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
