//! The adapter to the payment provider: charges and refunds over HTTP, each call bounded by a
//! real timeout, each carrying an idempotency key so a retry (or a restart) never charges or
//! refunds twice.
//!
//! Whether a failure is worth retrying is decided here, once ([`ProviderError::is_transient`]):
//! `5xx`, `429`, timeouts and connection errors leave the outcome unknown and are retried with
//! the same key; any other `4xx` is a definitive "no".
//!
//! Calls go through the runtime's guarded [`ServiceClient`] (breaker `payment-provider`,
//! bulkhead of `concurrency`), with its retries off: the worker retries, with backoff stored
//! per payment, so a retry happens at one layer only. An open breaker or a full bulkhead is
//! [`ProviderError::Unavailable`], retried by the worker like any other outage.

use mercato_runtime::settings::{InvalidSetting, Validate, ensure, positive};

use http::StatusCode;
use mercato_runtime::client::{CallError, ServiceRequest};
use mercato_runtime::config::{BreakerSettings, BulkheadSettings, RetrySettings};
use mercato_runtime::resilience::ResilienceError;
use mercato_runtime::{ClientConfig, ClientMetrics, ServiceClient};
use serde::{Deserialize, Serialize};

/// Where the provider is and how patiently it is called (`[payments.provider]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// The provider's base URL (the sandbox by default).
    pub url: String,
    /// Upper bound for one call, connection and response body included.
    pub timeout_ms: u64,
    /// Charge calls per payment before it fails as `provider_unavailable`.
    pub max_attempts: u32,
    /// First retry wait; it doubles per attempt, with jitter.
    pub backoff_ms: u64,
    /// Longest retry wait.
    pub max_backoff_ms: u64,
    /// Calls in flight at once (a bulkhead: a hanging provider ties up at most this many).
    pub concurrency: usize,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8190".into(),
            timeout_ms: 2_000,
            max_attempts: 5,
            backoff_ms: 500,
            max_backoff_ms: 30_000,
            concurrency: 16,
        }
    }
}

impl Validate for ProviderConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(InvalidSetting::new(
                "url",
                format!("{:?} must start with http:// or https://", self.url),
            ));
        }
        positive(self.timeout_ms, "timeout_ms")?;
        positive(u64::from(self.max_attempts), "max_attempts")?;
        positive(self.backoff_ms, "backoff_ms")?;
        positive(self.concurrency as u64, "concurrency")?;
        ensure(
            self.max_backoff_ms >= self.backoff_ms,
            "max_backoff_ms",
            "must not be less than backoff_ms",
        )
    }
}

/// Why a provider call did not give the answer asked for.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the card was declined ({code})")]
    Declined { code: String },
    /// A request the provider will never accept as sent (invalid card, a reused key).
    #[error("the provider refused the request with {status}: {code}")]
    Refused { status: u16, code: String },
    /// No definitive answer: server error, rate limit, or the connection failed.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// Not sent at all: the provider's breaker is open or its bulkhead is full, so nothing can
    /// have happened at the provider; try again after `retry_after`.
    #[error("the provider call was not sent: {reason}")]
    NotSent {
        reason: String,
        retry_after: std::time::Duration,
    },
    /// No answer within the call's timeout; the provider may still have acted on it.
    #[error("the provider did not answer in time: {0}")]
    TimedOut(String),
    /// A success whose body we cannot read: its outcome is unknown, so it is retried.
    #[error("the provider answered {status} with an unreadable body: {reason}")]
    Malformed { status: u16, reason: String },
    #[error("invalid provider URL {0:?}")]
    Config(String),
}

impl ProviderError {
    /// True when the same request, with the same key, may still succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::NotSent { .. } | Self::TimedOut(_) | Self::Malformed { .. }
        )
    }

    /// A short name for metrics and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Declined { .. } => "declined",
            Self::Refused { .. } => "refused",
            Self::Unavailable(_) => "unavailable",
            Self::NotSent { .. } => "not_sent",
            Self::TimedOut(_) => "timeout",
            Self::Malformed { .. } => "malformed",
            Self::Config(_) => "config",
        }
    }
}

/// A charge as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderCharge {
    pub id: String,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// A refund as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderRefund {
    pub id: String,
    pub charge_id: String,
}

/// What to charge.
#[derive(Debug, Clone, Copy)]
pub struct ChargeRequest<'a> {
    pub idempotency_key: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub card_token: &'a str,
    /// Passed on as `x-correlation-id`, so the provider's logs line up with the order's.
    pub correlation_id: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
}

/// An HTTP client for the provider.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: ServiceClient,
}

impl ProviderClient {
    /// A client on `base`'s guards (breaker judgement, pool), with the provider's own timeout,
    /// concurrency and no retries of its own; breaker and call counts reported through `metrics`.
    ///
    /// # Errors
    /// A URL that is not HTTP, or a client that cannot be built.
    pub fn new(
        config: &ProviderConfig,
        base: &ClientConfig,
        metrics: &ClientMetrics,
    ) -> Result<Self, ProviderError> {
        let client = ClientConfig {
            connect_timeout_ms: base.connect_timeout_ms.min(config.timeout_ms),
            timeout_ms: config.timeout_ms,
            circuit_breaker: BreakerSettings {
                // Only a call that runs into its timeout is slow; it is a failure as well.
                slow_call_duration_threshold_ms: config.timeout_ms,
                probe_timeout_ms: config.timeout_ms,
                ..base.circuit_breaker.clone()
            },
            retry: RetrySettings {
                max_attempts: 1,
                ..base.retry.clone()
            },
            bulkhead: BulkheadSettings {
                max_concurrent: config.concurrency,
                ..base.bulkhead.clone()
            },
            ..base.clone()
        };
        let http = ServiceClient::new("payment-provider", &config.url, &client, metrics)
            .map_err(|e| ProviderError::Config(format!("{}: {e}", config.url)))?;
        Ok(Self { http })
    }

    /// Charges a card once per idempotency key.
    ///
    /// # Errors
    /// See [`ProviderError`]; only a transient one leaves the outcome unknown.
    pub async fn charge(&self, request: &ChargeRequest<'_>) -> Result<ProviderCharge, ProviderError> {
        let mut builder = self
            .http
            .post("/v1/charges")
            .idempotency_key(request.idempotency_key)
            .json(&serde_json::json!({
                "amount_minor": request.amount_minor,
                "currency": request.currency,
                "card_token": request.card_token,
            }));
        if let Some(id) = request.correlation_id {
            builder = builder.header(mercato_runtime::correlation::HEADER, id);
        }
        let charge: ProviderCharge = send(builder).await?;
        if charge.status != "succeeded" {
            // Only a settled charge may be reported as captured; anything else is asked again.
            return Err(ProviderError::Unavailable(format!(
                "charge {} is {}",
                charge.id, charge.status
            )));
        }
        Ok(charge)
    }

    /// Refunds a charge in full, once per charge.
    ///
    /// # Errors
    /// See [`ProviderError`].
    pub async fn refund(
        &self,
        charge_id: &str,
        idempotency_key: &str,
        correlation_id: Option<&str>,
    ) -> Result<ProviderRefund, ProviderError> {
        let mut builder = self
            .http
            .post("/v1/refunds")
            .idempotency_key(idempotency_key)
            .json(&serde_json::json!({ "charge_id": charge_id }));
        if let Some(id) = correlation_id {
            builder = builder.header(mercato_runtime::correlation::HEADER, id);
        }
        send(builder).await
    }
}

async fn send<T: serde::de::DeserializeOwned>(request: ServiceRequest<'_>) -> Result<T, ProviderError> {
    let response = request.send().await.map_err(unanswered)?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| transport(&e))?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| ProviderError::Malformed {
            status: status.as_u16(),
            reason: e.to_string(),
        });
    }
    Err(classify(status, &body))
}

/// The error a non-success answer means.
fn classify(status: StatusCode, body: &[u8]) -> ProviderError {
    let code = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error.code)
        .unwrap_or_else(|_| "unknown".into());
    match status {
        StatusCode::PAYMENT_REQUIRED => ProviderError::Declined { code },
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
            ProviderError::Unavailable(format!("{status} ({code})"))
        }
        // The provider (or a proxy before it) gave up on the call, as ours would have: it may
        // have acted on it. It also answers so when our deadline, which travels with the call,
        // passes first.
        StatusCode::GATEWAY_TIMEOUT => ProviderError::TimedOut(format!("{status} ({code})")),
        s if s.is_server_error() => ProviderError::Unavailable(format!("{status} ({code})")),
        s => ProviderError::Refused {
            status: s.as_u16(),
            code,
        },
    }
}

/// How long a call refused by a full bulkhead waits before it is tried again.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// A call the guards refused or cut, or that failed on the way.
fn unanswered(error: CallError) -> ProviderError {
    match error {
        ResilienceError::Inner(error) => transport(&error),
        ResilienceError::TimedOut(_) | ResilienceError::DeadlineExceeded => {
            ProviderError::TimedOut(error.to_string())
        }
        ResilienceError::CircuitOpen { retry_after, .. } => ProviderError::NotSent {
            reason: error.to_string(),
            retry_after,
        },
        ResilienceError::BulkheadFull { .. } => ProviderError::NotSent {
            reason: error.to_string(),
            retry_after: BUSY_RETRY,
        },
        other => ProviderError::Unavailable(other.to_string()),
    }
}

fn transport(error: &reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::TimedOut(error.to_string())
    } else {
        ProviderError::Unavailable(format!("{error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str) -> Vec<u8> {
        format!(r#"{{"error": {{"code": "{code}"}}}}"#).into_bytes()
    }

    #[test]
    fn a_call_the_guards_refused_was_not_sent_and_says_when_to_come_back() {
        let open = unanswered(ResilienceError::CircuitOpen {
            name: "payment-provider".into(),
            retry_after: std::time::Duration::from_secs(3),
        });
        assert!(
            matches!(&open, ProviderError::NotSent { retry_after, .. } if retry_after.as_secs() == 3),
            "{open:?}"
        );
        assert!(open.is_transient());
        assert_eq!(open.kind(), "not_sent");
        let full = unanswered(ResilienceError::BulkheadFull {
            name: "payment-provider".into(),
        });
        assert!(matches!(full, ProviderError::NotSent { retry_after, .. } if retry_after == BUSY_RETRY));
        let timed_out = unanswered(ResilienceError::DeadlineExceeded);
        assert!(
            matches!(timed_out, ProviderError::TimedOut(_)),
            "a sent call may have acted"
        );
    }

    #[test]
    fn a_504_is_a_timeout_whose_outcome_is_unknown() {
        let e = classify(StatusCode::GATEWAY_TIMEOUT, &body("deadline-exceeded"));
        assert!(matches!(&e, ProviderError::TimedOut(_)), "{e:?}");
        assert!(e.is_transient());
        assert!(e.to_string().contains("in time"), "{e}");
    }

    #[test]
    fn a_402_is_a_decline_that_is_not_retried() {
        let e = classify(StatusCode::PAYMENT_REQUIRED, &body("card_declined"));
        assert!(matches!(&e, ProviderError::Declined { code } if code == "card_declined"));
        assert!(!e.is_transient());
    }

    #[test]
    fn server_errors_and_rate_limits_are_retried() {
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            assert!(classify(status, b"").is_transient(), "{status}");
        }
    }

    #[test]
    fn other_client_errors_are_refusals_with_their_code() {
        let e = classify(StatusCode::BAD_REQUEST, &body("invalid_card"));
        assert!(matches!(&e, ProviderError::Refused { status: 400, code } if code == "invalid_card"));
        assert!(!e.is_transient());
        let e = classify(StatusCode::CONFLICT, b"not json");
        assert!(matches!(&e, ProviderError::Refused { status: 409, code } if code == "unknown"));
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        assert_eq!(ProviderConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut ProviderConfig)| {
            let mut c = ProviderConfig::default();
            f(&mut c);
            c.validate().err().map(|e| e.key)
        };
        assert_eq!(bad(|c| c.url = "ftp://x".into()), Some("url".into()));
        assert_eq!(bad(|c| c.timeout_ms = 0), Some("timeout_ms".into()));
        assert_eq!(bad(|c| c.max_attempts = 0), Some("max_attempts".into()));
        assert_eq!(bad(|c| c.concurrency = 0), Some("concurrency".into()));
        assert_eq!(bad(|c| c.max_backoff_ms = 1), Some("max_backoff_ms".into()));
    }
}
