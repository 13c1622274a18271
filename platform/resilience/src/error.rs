//! The errors the layers return.

use std::sync::Arc;
use std::time::Duration;

/// What a resilience layer returns: the wrapped service's own error, or why a layer refused or cut
/// the call. Map it to HTTP once, at the edge: `CircuitOpen` and `BulkheadFull` to 503 with
/// `Retry-After`, `TimedOut` and `DeadlineExceeded` to 504.
#[derive(Debug, thiserror::Error)]
pub enum ResilienceError<E> {
    /// The wrapped service failed.
    #[error("{0}")]
    Inner(E),
    /// The circuit breaker is open (or its half-open probes are all in flight); nothing was sent.
    #[error("circuit breaker `{name}` is open; retry after {retry_after:?}")]
    CircuitOpen {
        name: Arc<str>,
        /// When the breaker will next let a probe through; the value for a `Retry-After` header.
        retry_after: Duration,
    },
    /// A retry was warranted but the retry budget is spent; `last` is the final attempt's error.
    #[error("retry budget exhausted after {attempts} attempt(s)")]
    BudgetExhausted {
        attempts: u32,
        last: Box<ResilienceError<E>>,
    },
    /// The call ran longer than its own timeout.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// The caller's deadline passed, before sending or while waiting.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The bulkhead had no permit and no room in its queue, or the wait for a permit ran out.
    #[error("bulkhead `{name}` is full")]
    BulkheadFull { name: Arc<str> },
}

impl<E> ResilienceError<E> {
    /// Whether trying again later may succeed, judged from the layer's reason alone.
    ///
    /// Only a timeout is transient: an open circuit or a full bulkhead is load shedding that a
    /// prompt retry would make worse, and a passed deadline cannot be met by trying again. An
    /// [`Inner`](Self::Inner) error is not judged here, because only its owner knows; see
    /// [`is_transient_by`](Self::is_transient_by).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::TimedOut(_))
    }

    /// [`is_transient`](Self::is_transient), with `inner` judging a wrapped service error.
    pub fn is_transient_by(&self, inner: impl FnOnce(&E) -> bool) -> bool {
        match self {
            Self::Inner(e) => inner(e),
            other => other.is_transient(),
        }
    }

    /// How long a client should wait before trying again, when the layer knows.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_after, .. } => Some(*retry_after),
            Self::BudgetExhausted { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// The wrapped service's error, if that is what this is.
    #[must_use]
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }
}

/// An invalid setting, naming its key so that start-up fails with a message an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resilience setting `{key}`: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: &'static str,
}

pub(crate) fn check(ok: bool, key: &'static str, reason: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError { key, reason })
    }
}

/// The key `validate` names when it refuses the default settings as `change` leaves them.
#[cfg(test)]
pub(crate) fn refused_key<C: Default>(
    validate: fn(&C) -> Result<(), ConfigError>,
    change: impl FnOnce(&mut C),
) -> &'static str {
    let mut config = C::default();
    change(&mut config);
    validate(&config)
        .expect_err("the changed settings are refused")
        .key
}

#[cfg(test)]
mod tests {
    use super::*;

    type Error = ResilienceError<std::io::Error>;

    #[test]
    fn only_timeouts_are_transient_on_their_own() {
        assert!(Error::TimedOut(Duration::from_secs(1)).is_transient());
        assert!(!Error::DeadlineExceeded.is_transient());
        assert!(!Error::BulkheadFull { name: "x".into() }.is_transient());
        let inner = Error::Inner(std::io::Error::other("reset"));
        assert!(!inner.is_transient());
        assert!(inner.is_transient_by(|_| true));
    }

    #[test]
    fn open_circuit_says_when_to_retry_even_behind_an_exhausted_budget() {
        let open = Error::CircuitOpen {
            name: "payments".into(),
            retry_after: Duration::from_secs(3),
        };
        assert_eq!(open.retry_after(), Some(Duration::from_secs(3)));
        assert!(open.to_string().contains("payments"));
        let spent = Error::BudgetExhausted {
            attempts: 2,
            last: Box::new(open),
        };
        assert_eq!(spent.retry_after(), Some(Duration::from_secs(3)));
    }
}
