//! Rate limiting with GCRA (the generic cell rate algorithm), per caller and route class.
//!
//! - [`gcra`]: the maths, a pure function of the stored theoretical arrival time (TAT), the time
//!   and the quota.
//! - [`LocalLimiter`]: TATs in this process, in a bounded map that drops idle keys first.
//! - `RedisLimiter`: TATs in Redis, read and written by one Lua script, so every gateway
//!   instance shares one limit. The caller's clock is passed to the script (instances are
//!   assumed NTP-synchronised), which also lets tests drive it.
//! - [`RateLimiter`]: the class table and the backend; while Redis fails it limits locally,
//!   logs the outage once, and reports itself [`LimiterHealth::Degraded`].
//!
//! A key holds one TAT in microseconds on the limiter's [`Clock`]; a key whose TAT has passed is
//! idle and equivalent to no key at all, which is why idle keys can be evicted and why Redis keys
//! expire when their TAT passes.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mercato_resilience::register_metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::StartError;
use crate::config::{RateLimitBackend, RateLimitConfig};

pub mod gcra {
    //! GCRA: each request moves the key's TAT one emission interval `T` later; a request is
    //! refused when that would put the TAT more than `burst × T` ahead of now. `burst` requests
    //! pass at once, then one per `T`.

    use std::time::Duration;

    /// A sustained rate (one request per `interval_us`) and a burst.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Quota {
        pub interval_us: u64,
        pub burst: u32,
    }

    impl Quota {
        /// # Panics
        /// When `rate_per_second` or `burst` is 0 (configuration validation refuses both).
        #[must_use]
        pub fn per_second(rate_per_second: u32, burst: u32) -> Self {
            Self::per_period(1_000_000, rate_per_second, burst)
        }

        /// `rate_per_minute` and `burst`, for slow rates such as failed logins.
        ///
        /// # Panics
        /// When `rate_per_minute` or `burst` is 0 (configuration validation refuses both).
        #[must_use]
        pub fn per_minute(rate_per_minute: u32, burst: u32) -> Self {
            Self::per_period(60_000_000, rate_per_minute, burst)
        }

        /// `rate` requests per `period_us`, `burst` at once.
        fn per_period(period_us: u64, rate: u32, burst: u32) -> Self {
            assert!(rate > 0 && burst > 0, "a quota needs a rate and a burst");
            Self {
                interval_us: (period_us / u64::from(rate)).max(1),
                burst,
            }
        }

        /// How far ahead of now a TAT may be: `burst × T`.
        #[must_use]
        pub fn tolerance_us(&self) -> u64 {
            self.interval_us * u64::from(self.burst)
        }
    }

    /// The outcome for one request.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Decision {
        pub allowed: bool,
        /// The burst: `RateLimit-Limit`.
        pub limit: u32,
        /// Requests that would pass right now after this one: `RateLimit-Remaining`.
        pub remaining: u32,
        /// Until the full burst is available again: `RateLimit-Reset`.
        pub reset: Duration,
        /// For a refused request, until a retry can pass: `Retry-After`.
        pub retry_after: Option<Duration>,
        /// The TAT to store (unchanged when refused).
        pub tat_us: u64,
    }

    /// Decides a request at `now_us` for a key whose stored TAT is `tat_us` (`None`: no state).
    #[must_use]
    pub fn decide(tat_us: Option<u64>, now_us: u64, quota: Quota) -> Decision {
        let tat = tat_us.map_or(now_us, |t| t.max(now_us));
        let tolerance = quota.tolerance_us();
        let next = tat.saturating_add(quota.interval_us);
        let ahead = next - now_us;
        if ahead > tolerance {
            Decision {
                allowed: false,
                limit: quota.burst,
                remaining: 0,
                reset: Duration::from_micros(tat - now_us),
                retry_after: Some(Duration::from_micros(ahead - tolerance)),
                tat_us: tat,
            }
        } else {
            Decision {
                allowed: true,
                limit: quota.burst,
                remaining: u32::try_from((tolerance - ahead) / quota.interval_us).unwrap_or(u32::MAX),
                reset: Duration::from_micros(ahead),
                retry_after: None,
                tat_us: next,
            }
        }
    }

    /// Whole seconds, rounded up, as the `Retry-After` and `RateLimit-*` headers want.
    #[must_use]
    pub fn ceil_secs(d: Duration) -> u64 {
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

use gcra::{Decision, Quota};

/// The limiter's time: microseconds on a scale every instance sharing a limit agrees on.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now_us(&self) -> u64;
}

/// Microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to: for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_us: AtomicU64,
}

impl ManualClock {
    #[must_use]
    pub fn starting_at(now_us: u64) -> Self {
        Self {
            now_us: AtomicU64::new(now_us),
        }
    }

    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.now_us.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.now_us.load(Ordering::SeqCst)
    }
}

const SHARDS: usize = 16;

/// TATs in this process: a bounded map in shards, so that eviction scans stay short.
#[derive(Debug)]
pub struct LocalLimiter {
    shards: Vec<Mutex<HashMap<String, u64>>>,
    max_per_shard: usize,
    hasher: RandomState,
}

impl LocalLimiter {
    #[must_use]
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    /// Decides a request for `key` and records it when allowed.
    pub fn check(&self, key: &str, now_us: u64, quota: Quota) -> Decision {
        let mut map = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        let known = map.get_mut(key);
        let decision = gcra::decide(known.as_deref().copied(), now_us, quota);
        if decision.allowed {
            // A known caller's entry is updated in place: no key is copied on the common path.
            if let Some(tat) = known {
                *tat = decision.tat_us;
            } else {
                if map.len() >= self.max_per_shard {
                    evict(&mut map, now_us);
                }
                map.insert(key.to_owned(), decision.tat_us);
            }
        }
        decision
    }

    /// Decides a request for `key` as [`check`](Self::check) would, recording nothing.
    pub fn peek(&self, key: &str, now_us: u64, quota: Quota) -> Decision {
        let map = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        gcra::decide(map.get(key).copied(), now_us, quota)
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, u64>> {
        let shard = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[shard]
    }

    /// Keys held now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the idle keys; when none is idle, the key closest to idle, whose loss matters least.
fn evict(map: &mut HashMap<String, u64>, now_us: u64) {
    map.retain(|_, tat| *tat > now_us);
    if !map.is_empty()
        && let Some(oldest) = map.iter().min_by_key(|(_, tat)| **tat).map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

/// Reads the key's TAT, decides as [`gcra::decide`] does, stores the new TAT with an expiry at
/// the moment it passes, and returns the TAT it read (-1 for none): all in one atomic step.
const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  tat = math.max(tonumber(stored), now)
end
local next_tat = tat + interval
if next_tat - now <= tolerance then
  local ttl_ms = math.ceil((next_tat - now) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', ttl_ms)
end
if stored then
  return tonumber(stored)
end
return -1
";

#[derive(Debug, thiserror::Error)]
enum RedisFailure {
    #[error("redis timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

struct RedisLimiter {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
}

impl RedisLimiter {
    async fn check(&self, key: &str, now_us: u64, quota: Quota) -> Result<Decision, RedisFailure> {
        let run = async {
            let mut c = crate::redis_connection::get(&self.client, &self.connection, self.timeout).await?;
            let stored: i64 = self
                .script
                .key(format!("{}:{key}", self.prefix))
                .arg(now_us)
                .arg(quota.interval_us)
                .arg(quota.tolerance_us())
                .invoke_async(&mut c)
                .await?;
            Ok::<_, RedisFailure>(u64::try_from(stored).ok())
        };
        let stored = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| RedisFailure::Timeout(self.timeout))??;
        Ok(gcra::decide(stored, now_us, quota))
    }

    async fn ping(&self) -> Result<(), RedisFailure> {
        let run = async {
            let mut c = crate::redis_connection::get(&self.client, &self.connection, self.timeout).await?;
            redis::cmd("PING").query_async::<String>(&mut c).await?;
            Ok::<_, RedisFailure>(())
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| RedisFailure::Timeout(self.timeout))?
    }
}

/// Whether the limiter works as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimiterHealth {
    Healthy,
    /// The shared backend fails; requests are limited by this instance alone.
    Degraded(String),
}

#[derive(Clone)]
struct Metrics {
    degraded: Gauge,
    refused: Counter,
}

/// Who a request is limited as: its token's subject, else its client address. Written into
/// the limiter's key as `sub:<subject>` or `ip:<address>`.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    Subject(&'a str),
    Ip(std::net::IpAddr),
}

/// What a limiter's key holds after the class: written straight into the key, as formatting
/// it cost more than the rest of the local check.
pub trait KeyName {
    fn push_to(&self, key: &mut String);
}

impl KeyName for Caller<'_> {
    fn push_to(&self, key: &mut String) {
        match self {
            Self::Subject(subject) => {
                key.push_str("sub:");
                key.push_str(subject);
            }
            Self::Ip(ip) => {
                key.push_str("ip:");
                key.push_str(crate::forwarded::IpText::new(*ip).as_str());
            }
        }
    }
}

impl KeyName for &str {
    fn push_to(&self, key: &mut String) {
        key.push_str(self);
    }
}

/// The gateway's limiter: route classes, a backend and the fallback.
pub struct RateLimiter {
    classes: HashMap<String, Quota>,
    local: LocalLimiter,
    redis: Option<RedisLimiter>,
    clock: Arc<dyn Clock>,
    retry_interval: Duration,
    /// Set while Redis fails; cleared by the first success after.
    degraded: AtomicBool,
    reason: Mutex<String>,
    /// Redis is not tried again before this instant.
    retry_at: Mutex<Option<Instant>>,
    metrics: Metrics,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("classes", &self.classes)
            .field("redis", &self.redis.is_some())
            .field("degraded", &self.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Builds the limiter; Redis is connected on first use, so a gateway starts without it.
    ///
    /// # Errors
    /// The Redis URL cannot be parsed.
    pub fn new(
        config: &RateLimitConfig,
        clock: Arc<dyn Clock>,
        registry: &mut Registry,
    ) -> Result<Self, StartError> {
        let classes = config
            .classes
            .iter()
            .map(|(name, c)| (name.clone(), Quota::per_second(c.rate_per_second, c.burst)))
            .collect();
        let redis = match config.backend {
            RateLimitBackend::Local => None,
            RateLimitBackend::Redis => {
                let client =
                    redis::Client::open(config.redis_url.as_str()).map_err(|e| StartError::Config {
                        key: "gateway.rate_limit.redis_url".into(),
                        message: e.to_string(),
                    })?;
                Some(RedisLimiter {
                    client,
                    connection: tokio::sync::Mutex::new(None),
                    script: redis::Script::new(GCRA_SCRIPT),
                    prefix: config.key_prefix.clone(),
                    timeout: Duration::from_millis(config.redis_timeout_ms),
                })
            }
        };
        let metrics = Metrics {
            degraded: Gauge::default(),
            refused: Counter::default(),
        };
        register_metrics!(registry, {
            metrics.degraded => "gateway_rate_limiter_degraded", "1 while the shared rate-limit store fails and limits are kept locally";
            metrics.refused => "gateway_rate_limited", "Requests refused with 429";
        });
        Ok(Self {
            classes,
            local: LocalLimiter::new(config.local_max_keys),
            redis,
            clock,
            retry_interval: Duration::from_millis(config.redis_retry_interval_ms),
            degraded: AtomicBool::new(false),
            reason: Mutex::default(),
            retry_at: Mutex::default(),
            metrics,
        })
    }

    /// Decides a request of `subject` on a route of `class`; `None` for a class with no quota.
    pub async fn check(&self, class: &str, subject: impl KeyName) -> Option<Decision> {
        let quota = *self.classes.get(class)?;
        // Room for the class, an address or a subject (a UUID) and their prefixes.
        let mut key = String::with_capacity(class.len() + 48);
        key.push_str(class);
        key.push(':');
        subject.push_to(&mut key);
        let now = self.clock.now_us();
        let decision = match &self.redis {
            Some(redis) if self.redis_due() => match redis.check(&key, now, quota).await {
                Ok(decision) => {
                    self.recovered();
                    decision
                }
                Err(failure) => {
                    self.failed(&failure);
                    self.local.check(&key, now, quota)
                }
            },
            _ => self.local.check(&key, now, quota),
        };
        if !decision.allowed {
            self.metrics.refused.inc();
        }
        Some(decision)
    }

    #[must_use]
    pub fn health(&self) -> LimiterHealth {
        if self.degraded.load(Ordering::SeqCst) {
            let reason = self.reason.lock().unwrap_or_else(PoisonError::into_inner).clone();
            LimiterHealth::Degraded(reason)
        } else {
            LimiterHealth::Healthy
        }
    }

    /// Whether limits are shared through Redis.
    #[must_use]
    pub fn shares_limits(&self) -> bool {
        self.redis.is_some()
    }

    /// A round trip to the shared store: `None` when limits are kept locally by configuration.
    /// Unlike [`Self::health`], it asks Redis now rather than reporting the last request's luck.
    pub async fn ping_store(&self) -> Option<Result<(), String>> {
        let redis = self.redis.as_ref()?;
        Some(redis.ping().await.map_err(|e| e.to_string()))
    }

    fn redis_due(&self) -> bool {
        let retry_at = self.retry_at.lock().unwrap_or_else(PoisonError::into_inner);
        retry_at.is_none_or(|at| Instant::now() >= at)
    }

    fn failed(&self, failure: &RedisFailure) {
        *self.retry_at.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + self.retry_interval);
        let reason = format!("redis unavailable, limiting locally: {failure}");
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = reason;
        if !self.degraded.swap(true, Ordering::SeqCst) {
            // Once per outage: the fallback keeps serving, so a log line per request would flood.
            tracing::warn!(error = %failure, "rate limiter lost redis; limiting per instance until it is back");
            self.metrics.degraded.set(1);
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::SeqCst) {
            tracing::info!("rate limiter reached redis again; limits are shared again");
            self.metrics.degraded.set(0);
            *self.retry_at.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

#[cfg(test)]
mod tests;
