//! `[cache]` settings.

use mercato_runtime::settings::{InvalidSetting, Validate, ensure, positive};
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

impl Validate for CacheConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        positive(self.l1_max_entries, "l1_max_entries")?;
        positive(self.ttl_ms, "ttl_ms")?;
        if !self.redis_url.is_empty() {
            ensure(
                self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://"),
                "redis_url",
                "must be empty or start with redis://",
            )?;
            ensure(
                redis::Client::open(self.redis_url.as_str()).is_ok(),
                "redis_url",
                "is not a Redis URL",
            )?;
            positive(self.redis_timeout_ms, "redis_timeout_ms")?;
        }
        Ok(())
    }
}

impl CacheConfig {
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
        assert_eq!(config.validate(), Ok(()));
        assert!(!config.has_l2());
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        let key = |config: CacheConfig| config.validate().err().map(|e| e.key);
        let good = CacheConfig::default();
        assert_eq!(
            key(CacheConfig {
                l1_max_entries: 0,
                ..good.clone()
            }),
            Some("l1_max_entries".into())
        );
        assert_eq!(
            key(CacheConfig {
                ttl_ms: 0,
                ..good.clone()
            }),
            Some("ttl_ms".into())
        );
        assert_eq!(
            key(CacheConfig {
                redis_url: "http://localhost".into(),
                ..good.clone()
            }),
            Some("redis_url".into())
        );
        assert_eq!(
            key(CacheConfig {
                redis_url: "redis://127.0.0.1:6379".into(),
                redis_timeout_ms: 0,
                ..good.clone()
            }),
            Some("redis_timeout_ms".into())
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
