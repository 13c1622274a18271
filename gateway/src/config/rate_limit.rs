//! `[gateway.rate_limit]`: the rate classes and where their state lives.

use std::collections::BTreeMap;

use mercato_runtime::settings::{InvalidSetting, Validate};
use serde::{Deserialize, Serialize};

/// The class a route without `rate_class` belongs to.
pub const DEFAULT_CLASS: &str = "default";

/// Where rate-limit state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitBackend {
    /// In this process: each gateway instance limits on its own.
    #[default]
    Local,
    /// In Redis, so every instance shares one limit; the local limiter stands in while Redis is
    /// unreachable.
    Redis,
}

/// One rate class: a sustained rate and the burst allowed on top of it (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateClassConfig {
    pub rate_per_second: u32,
    pub burst: u32,
}

/// `[gateway.rate_limit]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub backend: RateLimitBackend,
    pub redis_url: String,
    /// Prefix of every Redis key, so environments (and tests) sharing a server stay apart.
    pub key_prefix: String,
    /// Longest wait for Redis before a request is limited locally instead.
    pub redis_timeout_ms: u64,
    /// After a Redis failure, how long the gateway limits locally before it tries Redis again.
    pub redis_retry_interval_ms: u64,
    /// Most keys the local limiter holds; idle keys are evicted first.
    pub local_max_keys: usize,
    pub classes: BTreeMap<String, RateClassConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: RateLimitBackend::Local,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "mercato:ratelimit".into(),
            redis_timeout_ms: 100,
            redis_retry_interval_ms: 1_000,
            local_max_keys: 100_000,
            classes: BTreeMap::from([
                (
                    DEFAULT_CLASS.to_owned(),
                    RateClassConfig {
                        rate_per_second: 50,
                        burst: 100,
                    },
                ),
                // Password guessing and sign-up floods: a tenth of the sustained rate, keyed by
                // client IP. The burst leaves room for `mercato loadgen`'s setup (two calls per
                // customer, 20 customers by default, from one address).
                (
                    "auth".to_owned(),
                    RateClassConfig {
                        rate_per_second: 5,
                        burst: 50,
                    },
                ),
            ]),
        }
    }
}

impl Validate for RateLimitConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if !self.enabled {
            return Ok(());
        }
        for (name, class) in &self.classes {
            if class.rate_per_second == 0 || class.rate_per_second > 1_000_000 {
                return Err(InvalidSetting::new(
                    format!("rate_limit.classes.{name}.rate_per_second"),
                    "must be between 1 and 1000000",
                ));
            }
            if class.burst == 0 {
                return Err(InvalidSetting::new(
                    format!("rate_limit.classes.{name}.burst"),
                    "must be greater than 0",
                ));
            }
        }
        if self.local_max_keys == 0 {
            return Err(InvalidSetting::new(
                "rate_limit.local_max_keys",
                "must be greater than 0",
            ));
        }
        if self.backend == RateLimitBackend::Redis {
            if !self.redis_url.starts_with("redis://") {
                return Err(InvalidSetting::new(
                    "rate_limit.redis_url",
                    "must be a redis:// URL (TLS is not supported)",
                ));
            }
            if self.redis_timeout_ms == 0 {
                return Err(InvalidSetting::new(
                    "rate_limit.redis_timeout_ms",
                    "must be greater than 0",
                ));
            }
        }
        Ok(())
    }
}
