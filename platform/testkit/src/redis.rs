//! A Redis key namespace for one test, emptied when the test ends.

use redis::Commands as _;

/// The Redis the suites use: `MERCATO_TEST_REDIS_URL`, else the local default.
#[must_use]
pub fn url() -> String {
    std::env::var("MERCATO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique key prefix (`test:<uuid>:`); every key under it is deleted on drop, so tests share one
/// Redis in parallel and leave nothing behind.
#[derive(Debug)]
pub struct KeyPrefix {
    url: String,
    prefix: String,
}

impl KeyPrefix {
    #[must_use]
    pub fn new() -> Self {
        Self {
            url: url(),
            prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.prefix
    }

    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeyPrefix {
    fn drop(&mut self) {
        // Blocking on purpose: drop cannot await, and a test's end is no hot path. A Redis that
        // is gone already has nothing to clean.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(std::time::Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = match connection.scan_match(&pattern) {
            Ok(iter) => iter.collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query(&mut connection);
        }
    }
}
