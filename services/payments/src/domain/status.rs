//! The states of a payment and the rule for what follows a charge attempt.
//!
//! ```text
//! pending ──captured──▶ captured ──refund asked──▶ refund_pending ──refunded──▶ refunded
//!    │  └──captured after a refund was asked──────▶ refund_pending
//!    └──declined / provider gave up / refund asked before any call──▶ failed
//! ```

use std::time::Duration;

use super::Backoff;

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Recorded; the provider has not given a final answer yet.
    Pending,
    Captured,
    /// Declined, refused, or the provider never answered within our limits.
    Failed,
    /// Captured and a refund was asked for; the provider has not confirmed it yet.
    RefundPending,
    Refunded,
}

impl PaymentStatus {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Captured,
        Self::Failed,
        Self::RefundPending,
        Self::Refunded,
    ];

    /// The name stored in the database and shown to clients.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Captured => "captured",
            Self::Failed => "failed",
            Self::RefundPending => "refund_pending",
            Self::Refunded => "refunded",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// True while the worker still has to talk to the provider.
    #[must_use]
    pub fn needs_provider(self) -> bool {
        matches!(self, Self::Pending | Self::RefundPending)
    }
}

/// Why a payment failed, as the saga is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    Declined,
    ProviderUnavailable,
}

/// How a charge call that did not capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeFailure {
    /// A definitive "no": declined, or a request the provider will never accept.
    Refused,
    /// No definitive answer (5xx, timeout, connection error): the same key may be tried again.
    Unknown,
}

/// What the worker does after a charge call that did not capture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Fail(FailureReason),
    RetryIn(Duration),
}

/// The rule after the `attempt`-th charge call (1-based) of a payment did not capture.
#[must_use]
pub fn after_failed_charge(
    failure: ChargeFailure,
    attempt: u32,
    max_attempts: u32,
    backoff: &Backoff,
    jitter: f64,
) -> Next {
    match failure {
        ChargeFailure::Refused => Next::Fail(FailureReason::Declined),
        ChargeFailure::Unknown if attempt >= max_attempts => Next::Fail(FailureReason::ProviderUnavailable),
        ChargeFailure::Unknown => Next::RetryIn(backoff.delay(attempt, jitter)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(PaymentStatus::parse("settled"), None);
    }

    #[test]
    fn only_pending_work_needs_the_provider() {
        let needs: Vec<_> = PaymentStatus::ALL
            .into_iter()
            .filter(|s| s.needs_provider())
            .collect();
        assert_eq!(needs, [PaymentStatus::Pending, PaymentStatus::RefundPending]);
    }

    #[test]
    fn a_refusal_ends_the_attempts_at_once() {
        for attempt in [1, 3, 9] {
            assert_eq!(
                after_failed_charge(ChargeFailure::Refused, attempt, 3, &BACKOFF, 0.5),
                Next::Fail(FailureReason::Declined)
            );
        }
    }

    #[test]
    fn an_unknown_outcome_is_retried_with_backoff_until_the_attempts_run_out() {
        assert_eq!(
            after_failed_charge(ChargeFailure::Unknown, 1, 3, &BACKOFF, 0.0),
            Next::RetryIn(Duration::from_millis(50))
        );
        assert_eq!(
            after_failed_charge(ChargeFailure::Unknown, 2, 3, &BACKOFF, 1.0),
            Next::RetryIn(Duration::from_millis(200))
        );
        assert_eq!(
            after_failed_charge(ChargeFailure::Unknown, 3, 3, &BACKOFF, 0.0),
            Next::Fail(FailureReason::ProviderUnavailable)
        );
    }
}
