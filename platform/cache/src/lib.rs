//! Cache-aside lookups of other services' data, kept correct by their change events.
//!
//! - [`Cache`]: a named cache keyed by `String`. L1 is in this process (moka: bounded by entry
//!   count, with a TTL); L2 is Redis when a URL is configured (values as JSON, with the same
//!   TTL). [`Cache::get_or_load`] runs one load per key at a time in this process, and a load that
//!   started before an invalidation of its key never fills either level.
//! - [`Invalidator`]: a background task on a broadcast subscription to one bus category; every
//!   instance runs one, so an event invalidates L1 everywhere (and L2, once per instance). When
//!   the subscription reports a gap it clears L1.
//! - [`CacheConfig`] (`[cache]`) and [`CacheMetrics`] (`cache_requests_total` by level and
//!   result, loads, errors, invalidations).
//!
//! Layout: `config`, `metrics`, `generation` (the stamps that fence stale loads), `cache` (L1 and
//! the read path), `l2` (Redis), `invalidator`.
#![forbid(unsafe_code)]

mod cache;
mod config;
mod generation;
mod invalidator;
mod l2;
mod metrics;

pub use cache::{Cache, CacheError, CacheValue};
pub use config::CacheConfig;
pub use invalidator::Invalidator;
pub use metrics::CacheMetrics;
