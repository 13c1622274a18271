//! The caches' metrics, one family each, labelled by cache name.

use mercato_runtime::resilience::register_metrics;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Level {
    l1,
    l2,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Lookup {
    hit,
    miss,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ErrorKind {
    /// L2 failed or timed out; the request went on without it.
    redis,
    /// The loader failed; nothing was cached.
    load,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    cache: String,
    level: Level,
    result: Lookup,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    cache: String,
    kind: ErrorKind,
}

/// Every cache's counters; register once per service and share among its caches.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    requests: Family<RequestLabels, Counter>,
    loads: Family<CacheLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    invalidations: Family<CacheLabel, Counter>,
    clears: Family<CacheLabel, Counter>,
}

impl CacheMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        register_metrics!(registry, {
            metrics.requests => "cache_requests", "Cache lookups by level (l1, l2) and result (hit, miss)";
            metrics.errors => "cache_errors", "Failed loads (kind=load) and Redis calls that failed or timed out (kind=redis)";
        });
        let per_cache = [
            (
                "cache_loads",
                "Loads from the source after both levels missed",
                &metrics.loads,
            ),
            (
                "cache_invalidations",
                "Keys invalidated by change events",
                &metrics.invalidations,
            ),
            (
                "cache_clears",
                "Whole in-process caches dropped after the event subscription reported a gap",
                &metrics.clears,
            ),
        ];
        for (name, help, family) in per_cache {
            registry.register(name, help, family.clone());
        }
        metrics
    }

    pub(crate) fn request(&self, cache: &str, level: Level, result: Lookup) {
        self.requests_at(cache, level, result).inc();
    }

    pub(crate) fn load(&self, cache: &str) {
        self.loads.get_or_create(&label(cache)).inc();
    }

    pub(crate) fn error(&self, cache: &str, kind: ErrorKind) {
        self.errors_of(cache, kind).inc();
    }

    pub(crate) fn invalidation(&self, cache: &str) {
        self.invalidations.get_or_create(&label(cache)).inc();
    }

    pub(crate) fn clear(&self, cache: &str) {
        self.clears.get_or_create(&label(cache)).inc();
    }

    /// Lookups of `cache` at `level` ("l1" or "l2") with `result` ("hit" or "miss") so far.
    #[must_use]
    pub fn requests(&self, cache: &str, level: &str, result: &str) -> u64 {
        let level = match level {
            "l1" => Level::l1,
            "l2" => Level::l2,
            _ => return 0,
        };
        let result = match result {
            "hit" => Lookup::hit,
            "miss" => Lookup::miss,
            _ => return 0,
        };
        self.requests_at(cache, level, result).get()
    }

    /// Loads from the source by `cache` so far.
    #[must_use]
    pub fn loads(&self, cache: &str) -> u64 {
        self.loads.get_or_create(&label(cache)).get()
    }

    /// Times `cache` was cleared so far (each subscription of its invalidator, and each gap).
    #[must_use]
    pub fn clears(&self, cache: &str) -> u64 {
        self.clears.get_or_create(&label(cache)).get()
    }

    /// Redis failures seen by `cache` so far.
    #[must_use]
    pub fn redis_errors(&self, cache: &str) -> u64 {
        self.errors_of(cache, ErrorKind::redis).get()
    }

    fn requests_at(&self, cache: &str, level: Level, result: Lookup) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                cache: cache.to_owned(),
                level,
                result,
            })
            .clone()
    }

    fn errors_of(&self, cache: &str, kind: ErrorKind) -> Counter {
        self.errors
            .get_or_create(&ErrorLabels {
                cache: cache.to_owned(),
                kind,
            })
            .clone()
    }
}

fn label(cache: &str) -> CacheLabel {
    CacheLabel {
        cache: cache.to_owned(),
    }
}
