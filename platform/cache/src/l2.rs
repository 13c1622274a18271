//! L2: Redis, shared by every instance.
//!
//! Each key has a value (`<prefix><cache>:v:<key>`, JSON, with the TTL) and a version
//! (`<prefix><cache>:g:<key>`) that every invalidation increments before deleting the value. A
//! load reads the version with its miss and writes its result only if the version is unchanged,
//! in one script: a load that raced an invalidation on any instance never fills L2.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Value, its remaining TTL in milliseconds, and the key's version.
const READ: &str = r"
local v = redis.call('GET', KEYS[1])
local g = redis.call('GET', KEYS[2]) or '0'
if v then return {v, redis.call('PTTL', KEYS[1]), g} end
return {false, 0, g}
";

const WRITE_IF_VERSION: &str = r"
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// The version outlives any value written under it, so it cannot vanish under a load in flight.
const INVALIDATE: &str = r"
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
";

#[derive(Debug, thiserror::Error)]
pub(crate) enum L2Error {
    #[error("redis timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// What a read found.
pub(crate) struct Found {
    /// The JSON value and how many milliseconds it has left.
    pub(crate) value: Option<(String, u64)>,
    /// The key's version, to write a loaded value under.
    pub(crate) version: String,
}

pub(crate) struct L2 {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
    prefix: String,
    timeout: Duration,
    ttl_ms: u64,
    read: redis::Script,
    write: redis::Script,
    invalidate: redis::Script,
}

impl std::fmt::Debug for L2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl L2 {
    pub(crate) fn new(
        url: &str,
        prefix: String,
        timeout: Duration,
        ttl: Duration,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: tokio::sync::Mutex::new(None),
            prefix,
            timeout,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            read: redis::Script::new(READ),
            write: redis::Script::new(WRITE_IF_VERSION),
            invalidate: redis::Script::new(INVALIDATE),
        })
    }

    /// Connected on first use, so a service starts while Redis is away.
    async fn connection(&self) -> Result<ConnectionManager, L2Error> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let c = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    fn keys(&self, key: &str) -> (String, String) {
        (
            format!("{}v:{key}", self.prefix),
            format!("{}g:{key}", self.prefix),
        )
    }

    async fn bounded<T>(&self, call: impl Future<Output = Result<T, L2Error>>) -> Result<T, L2Error> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| L2Error::Timeout(self.timeout))?
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Found, L2Error> {
        let (value_key, version_key) = self.keys(key);
        self.bounded(async {
            let mut c = self.connection().await?;
            let (value, pttl, version): (Option<String>, i64, String) = self
                .read
                .key(value_key)
                .key(version_key)
                .invoke_async(&mut c)
                .await?;
            Ok(Found {
                // -1 (no expiry) cannot happen for values this cache wrote; -2 is a race with
                // expiry: either way the full TTL is the bound.
                value: value.map(|v| (v, u64::try_from(pttl).unwrap_or(self.ttl_ms).min(self.ttl_ms))),
                version,
            })
        })
        .await
    }

    /// Writes `json` unless the key was invalidated since `version` was read; `Ok(false)` then.
    pub(crate) async fn put(&self, key: &str, json: &str, version: &str) -> Result<bool, L2Error> {
        let (value_key, version_key) = self.keys(key);
        self.bounded(async {
            let mut c = self.connection().await?;
            let written: i64 = self
                .write
                .key(value_key)
                .key(version_key)
                .arg(version)
                .arg(json)
                .arg(self.ttl_ms)
                .invoke_async(&mut c)
                .await?;
            Ok(written == 1)
        })
        .await
    }

    pub(crate) async fn invalidate(&self, key: &str) -> Result<(), L2Error> {
        let (value_key, version_key) = self.keys(key);
        // Loads in flight take at most a Redis timeout and a source call; an hour of margin
        // over the value TTL is ample and still bounded.
        let version_ttl_ms = self.ttl_ms.saturating_add(3_600_000);
        self.bounded(async {
            let mut c = self.connection().await?;
            let _: i64 = self
                .invalidate
                .key(value_key)
                .key(version_key)
                .arg(version_ttl_ms)
                .invoke_async(&mut c)
                .await?;
            Ok(())
        })
        .await
    }
}
