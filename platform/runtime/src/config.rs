//! Settings shared by every service's HTTP server and client.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a service's HTTP server behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// A request still running after this long is answered `503`; 0 switches the limit off.
    pub request_timeout_ms: u64,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_grace_ms: u64,
    /// How long `/ready` reports "stopping" before the listener closes, so load balancers notice.
    pub drain_delay_ms: u64,
    /// Each readiness check is cut off after this long.
    pub readiness_check_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            drain_delay_ms: 0,
            readiness_check_timeout_ms: 2_000,
        }
    }
}

impl HttpConfig {
    #[must_use]
    pub fn request_timeout(&self) -> Option<Duration> {
        (self.request_timeout_ms > 0).then(|| Duration::from_millis(self.request_timeout_ms))
    }

    /// The first setting that cannot work, with its key.
    #[must_use]
    pub fn invalid_setting(&self) -> Option<(&'static str, String)> {
        if self.body_limit_bytes == 0 {
            return Some(("body_limit_bytes", "must be greater than 0".into()));
        }
        if self.readiness_check_timeout_ms == 0 {
            return Some(("readiness_check_timeout_ms", "must be greater than 0".into()));
        }
        None
    }
}

/// How services call each other over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    pub connect_timeout_ms: u64,
    /// Upper bound for one whole call, response body included.
    pub timeout_ms: u64,
    pub pool_max_idle_per_host: usize,
    pub pool_idle_timeout_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 1_000,
            timeout_ms: 10_000,
            pool_max_idle_per_host: 32,
            pool_idle_timeout_ms: 90_000,
        }
    }
}

impl ClientConfig {
    /// The first setting that cannot work, with its key.
    #[must_use]
    pub fn invalid_setting(&self) -> Option<(&'static str, String)> {
        if self.connect_timeout_ms == 0 {
            return Some(("connect_timeout_ms", "must be greater than 0".into()));
        }
        if self.timeout_ms == 0 {
            return Some(("timeout_ms", "must be greater than 0".into()));
        }
        None
    }
}
