//! Settings shared by every service's HTTP server and its clients of other services.

use std::time::Duration;

use mercato_resilience::{Backoff, BulkheadConfig, CircuitBreakerConfig, ConfigError, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::settings::{InvalidSetting, Validate, positive};

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
}

impl Validate for HttpConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        positive(self.body_limit_bytes as u64, "body_limit_bytes")?;
        positive(self.readiness_check_timeout_ms, "readiness_check_timeout_ms")
    }
}

/// How services call each other, over HTTP ([`crate::client`]) and gRPC ([`crate::grpc`]) (`[client]`).
///
/// Every call is guarded, outermost first, by budgeted retries, a circuit breaker per target
/// service, a per-attempt timeout that never runs past the caller's deadline, and a bulkhead per
/// target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    pub connect_timeout_ms: u64,
    /// Upper bound for one attempt, response body included; the caller's deadline, when sooner,
    /// wins.
    pub timeout_ms: u64,
    pub pool_max_idle_per_host: usize,
    pub pool_idle_timeout_ms: u64,
    pub circuit_breaker: BreakerSettings,
    pub retry: RetrySettings,
    pub bulkhead: BulkheadSettings,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 1_000,
            timeout_ms: 10_000,
            pool_max_idle_per_host: 32,
            pool_idle_timeout_ms: 90_000,
            circuit_breaker: BreakerSettings::default(),
            retry: RetrySettings::default(),
            bulkhead: BulkheadSettings::default(),
        }
    }
}

impl Validate for ClientConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        positive(self.connect_timeout_ms, "connect_timeout_ms")?;
        positive(self.timeout_ms, "timeout_ms")?;
        let ours = |e: ConfigError| InvalidSetting::new(setting_key(e.key), e.reason);
        self.circuit_breaker.to_config().validate().map_err(ours)?;
        positive(
            self.circuit_breaker.wait_duration_ms,
            "circuit_breaker.wait_duration_ms",
        )?;
        self.retry.to_config().validate().map_err(ours)?;
        self.bulkhead.to_config().validate().map_err(ours)
    }
}

impl ClientConfig {
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Our key for a setting the resilience library refused by its own name.
#[must_use]
pub(crate) fn setting_key(library_key: &'static str) -> &'static str {
    match library_key {
        "failure_rate_threshold" => "circuit_breaker.failure_rate_threshold_percent",
        "slow_call_rate_threshold" => "circuit_breaker.slow_call_rate_threshold_percent",
        "sliding_window_size" => "circuit_breaker.sliding_window_size",
        "minimum_number_of_calls" => "circuit_breaker.minimum_number_of_calls",
        "permitted_calls_in_half_open" => "circuit_breaker.permitted_calls_in_half_open",
        "probe_timeout" => "circuit_breaker.probe_timeout_ms",
        "max_attempts" => "retry.max_attempts",
        "backoff.cap" => "retry.backoff_cap_ms",
        "budget_ratio" => "retry.budget_percent",
        "budget_min_per_sec" => "retry.budget_min_per_sec",
        "budget_window" => "retry.budget_window_secs",
        "max_concurrent" => "bulkhead.max_concurrent",
        other => other,
    }
}

/// `[client.circuit_breaker]`: one breaker per target service. `5xx` answers (gRPC: `UNAVAILABLE`,
/// `INTERNAL`, `UNKNOWN`, `DATA_LOSS`), connection errors and timeouts are failures. Rates are
/// whole percentages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Failed calls, in percent of the window, at which the breaker opens (1–100).
    pub failure_rate_threshold_percent: u8,
    /// Slow calls, in percent of the window, at which the breaker opens (1–100).
    pub slow_call_rate_threshold_percent: u8,
    pub slow_call_duration_threshold_ms: u64,
    pub sliding_window_size: usize,
    /// No verdict before this many outcomes.
    pub minimum_number_of_calls: usize,
    /// How long an open breaker refuses calls before letting probes through.
    pub wait_duration_ms: u64,
    pub permitted_calls_in_half_open: usize,
    pub probe_timeout_ms: u64,
}

impl Default for BreakerSettings {
    /// resilience4j's 50 % thresholds, judged over Hystrix-sized windows (20 calls at least),
    /// with a slow call being one that takes half the default call timeout.
    fn default() -> Self {
        Self {
            failure_rate_threshold_percent: 50,
            slow_call_rate_threshold_percent: 50,
            slow_call_duration_threshold_ms: 5_000,
            sliding_window_size: 50,
            minimum_number_of_calls: 20,
            wait_duration_ms: 5_000,
            permitted_calls_in_half_open: 3,
            probe_timeout_ms: 5_000,
        }
    }
}

impl BreakerSettings {
    #[must_use]
    pub fn to_config(&self) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_rate_threshold: f64::from(self.failure_rate_threshold_percent) / 100.0,
            slow_call_rate_threshold: f64::from(self.slow_call_rate_threshold_percent) / 100.0,
            slow_call_duration_threshold: Duration::from_millis(self.slow_call_duration_threshold_ms),
            sliding_window_size: self.sliding_window_size,
            minimum_number_of_calls: self.minimum_number_of_calls,
            wait_duration_in_open: Duration::from_millis(self.wait_duration_ms),
            permitted_calls_in_half_open: self.permitted_calls_in_half_open,
            probe_timeout: Duration::from_millis(self.probe_timeout_ms),
        }
    }
}

/// `[client.retry]`: full-jitter exponential backoff under a Linkerd-style budget shared by every
/// call to one target; only idempotent requests (by method, by an `Idempotency-Key`, or reads
/// declared idempotent) are retried, after connection errors, timeouts and `502`/`503`/`504`
/// (gRPC: `UNAVAILABLE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Retries allowed on top of traffic, in percent of requests.
    pub budget_percent: u16,
    /// Retries allowed per second regardless of traffic.
    pub budget_min_per_sec: u32,
    /// How long a request counts towards the budget (1–60 s).
    pub budget_window_secs: u64,
}

impl Default for RetrySettings {
    /// Linkerd's budget: 20 % of requests plus 10 retries per second over 10 s.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_base_ms: 25,
            backoff_cap_ms: 1_000,
            budget_percent: 20,
            budget_min_per_sec: 10,
            budget_window_secs: 10,
        }
    }
}

impl RetrySettings {
    #[must_use]
    pub fn to_config(&self) -> RetryConfig {
        RetryConfig {
            max_attempts: self.max_attempts,
            backoff: Backoff {
                base: Duration::from_millis(self.backoff_base_ms),
                cap: Duration::from_millis(self.backoff_cap_ms),
            },
            budget_ratio: f32::from(self.budget_percent) / 100.0,
            budget_min_per_sec: self.budget_min_per_sec,
            budget_window: Duration::from_secs(self.budget_window_secs),
        }
    }
}

/// `[client.bulkhead]`: calls in flight to one target, and how many may wait how long for a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkheadSettings {
    pub max_concurrent: usize,
    pub max_queued: usize,
    pub max_wait_ms: u64,
}

impl Default for BulkheadSettings {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            max_queued: 64,
            max_wait_ms: 100,
        }
    }
}

impl BulkheadSettings {
    #[must_use]
    pub fn to_config(&self) -> BulkheadConfig {
        BulkheadConfig {
            max_concurrent: self.max_concurrent,
            max_queued: self.max_queued,
            max_wait: Duration::from_millis(self.max_wait_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change that makes the default client settings unusable.
    type Breakage = fn(&mut ClientConfig);

    fn key(change: impl FnOnce(&mut ClientConfig)) -> Option<String> {
        let mut config = ClientConfig::default();
        change(&mut config);
        config.validate().err().map(|e| e.key)
    }

    #[test]
    fn the_default_client_settings_are_valid() {
        assert_eq!(key(|_| {}), None);
    }

    #[test]
    fn invalid_client_settings_are_named_by_their_key_in_the_client_section() {
        let refusals: [(Breakage, &str); 8] = [
            (|c| c.timeout_ms = 0, "timeout_ms"),
            (
                |c| c.circuit_breaker.failure_rate_threshold_percent = 0,
                "circuit_breaker.failure_rate_threshold_percent",
            ),
            (
                |c| c.circuit_breaker.minimum_number_of_calls = 51,
                "circuit_breaker.minimum_number_of_calls",
            ),
            (
                |c| c.circuit_breaker.wait_duration_ms = 0,
                "circuit_breaker.wait_duration_ms",
            ),
            (|c| c.retry.max_attempts = 0, "retry.max_attempts"),
            (|c| c.retry.backoff_cap_ms = 1, "retry.backoff_cap_ms"),
            (|c| c.retry.budget_window_secs = 61, "retry.budget_window_secs"),
            (|c| c.bulkhead.max_concurrent = 0, "bulkhead.max_concurrent"),
        ];
        for (change, expected) in refusals {
            assert_eq!(key(change).as_deref(), Some(expected));
        }
    }

    #[test]
    fn a_partial_client_section_keeps_the_defaults_of_missing_keys() {
        let config: ClientConfig = serde_json::from_value(serde_json::json!({
            "retry": { "max_attempts": 1 },
            "circuit_breaker": { "wait_duration_ms": 250 },
        }))
        .unwrap();
        assert_eq!(config.retry.max_attempts, 1);
        assert_eq!(config.retry.budget_percent, 20);
        assert_eq!(config.circuit_breaker.wait_duration_ms, 250);
        assert_eq!(config.bulkhead, BulkheadSettings::default());
    }
}
