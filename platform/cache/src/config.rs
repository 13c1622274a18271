//! `[cache]` settings.

use serde::{Deserialize, Serialize};

/// Settings of every cache of a service (`[cache]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Off: every lookup goes to its source.
    pub enabled: bool,
    /// Entries each cache keeps in process before evicting the least useful.
    pub l1_max_entries: u64,
    /// How long an entry lives in L1 and in L2, whatever events say.
    pub ttl_ms: u64,
    /// `redis://host:6379` for a shared L2 (the distributed setting); empty for L1 only.
    pub redis_url: String,
    /// Prefix of every Redis key, so deployments can share a Redis.
    pub key_prefix: String,
    /// Longest a Redis call may take before the cache goes to the source instead.
    pub redis_timeout_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            l1_max_entries: 10_000,
            ttl_ms: 60_000,
            redis_url: String::new(),
            key_prefix: "mercato:cache:".into(),
            redis_timeout_ms: 250,
        }
    }
}

impl CacheConfig {
    /// The first setting that cannot work, with its key.
    #[must_use]
    pub fn invalid_setting(&self) -> Option<(&'static str, String)> {
        if self.l1_max_entries == 0 {
            return Some(("l1_max_entries", "must be greater than 0".into()));
        }
        if self.ttl_ms == 0 {
            return Some(("ttl_ms", "must be greater than 0".into()));
        }
        if !self.redis_url.is_empty() {
            if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
                return Some(("redis_url", "must be empty or start with redis://".into()));
            }
            if redis::Client::open(self.redis_url.as_str()).is_err() {
                return Some(("redis_url", "is not a Redis URL".into()));
            }
            if self.redis_timeout_ms == 0 {
                return Some(("redis_timeout_ms", "must be greater than 0".into()));
            }
        }
        None
    }

    /// Whether a shared L2 is configured.
    #[must_use]
    pub fn has_l2(&self) -> bool {
        !self.redis_url.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_in_process_only() {
        let config = CacheConfig::default();
        assert_eq!(config.invalid_setting(), None);
        assert!(!config.has_l2());
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        let key = |config: CacheConfig| config.invalid_setting().map(|(k, _)| k);
        let good = CacheConfig::default();
        assert_eq!(
            key(CacheConfig {
                l1_max_entries: 0,
                ..good.clone()
            }),
            Some("l1_max_entries")
        );
        assert_eq!(
            key(CacheConfig {
                ttl_ms: 0,
                ..good.clone()
            }),
            Some("ttl_ms")
        );
        assert_eq!(
            key(CacheConfig {
                redis_url: "http://localhost".into(),
                ..good.clone()
            }),
            Some("redis_url")
        );
        assert_eq!(
            key(CacheConfig {
                redis_url: "redis://127.0.0.1:6379".into(),
                redis_timeout_ms: 0,
                ..good.clone()
            }),
            Some("redis_timeout_ms")
        );
        assert_eq!(
            key(CacheConfig {
                redis_url: "redis://127.0.0.1:6379".into(),
                ..good
            }),
            None
        );
    }
}
