//! The long poll of `GET /api/orders/{id}`: `?wait_for_change_from=<version or status>` with
//! `wait_ms` (at most [`MAX_WAIT_MS`], [`DEFAULT_WAIT_MS`] when left out). The answer comes at
//! once when the order already differs from what the client has, otherwise when it changes, or
//! when the wait ends: the same `200` with the order as it is.

use std::time::Duration;

use mercato_runtime::resilience::deadline::Deadline;
use mercato_runtime::{FieldError, Problem};
use serde::Deserialize;
use tokio::time::Instant;

use crate::domain::Status;
use crate::store::OrderView;

pub const MAX_WAIT_MS: u64 = 30_000;
pub const DEFAULT_WAIT_MS: u64 = 5_000;

/// Room left before the request's deadline, so the answer still reaches the caller in time.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// The query of `GET /api/orders/{id}`.
#[derive(Debug, Default, Deserialize)]
pub struct WaitQuery {
    wait_for_change_from: Option<String>,
    wait_ms: Option<String>,
}

/// What the client has of the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Version(i64),
    Status(Status),
}

impl Seen {
    /// True when `view` is not what the client has.
    #[must_use]
    pub fn differs(&self, view: &OrderView) -> bool {
        match self {
            Self::Version(version) => view.version != *version,
            Self::Status(status) => view.status != status.as_str(),
        }
    }
}

/// A long poll: what the client has, and until when it waits.
#[derive(Debug, Clone)]
pub struct Wait {
    pub seen: Seen,
    pub until: Instant,
}

const STATUSES: [Status; 5] = [
    Status::Pending,
    Status::Confirmed,
    Status::Shipped,
    Status::Delivered,
    Status::Cancelled,
];

fn seen(value: &str) -> Option<Seen> {
    if let Ok(version) = value.parse::<i64>() {
        return (version >= 0).then_some(Seen::Version(version));
    }
    STATUSES
        .into_iter()
        .find(|s| s.as_str() == value)
        .map(Seen::Status)
}

impl WaitQuery {
    /// The long poll asked for, if any; the wait ends before the request's deadline.
    ///
    /// # Errors
    /// `422` naming `wait_for_change_from` or `wait_ms`.
    pub fn parse(&self) -> Result<Option<Wait>, Problem> {
        let mut errors = Vec::new();
        let wait_ms = match self.wait_ms.as_deref().map(str::parse::<u64>) {
            None => DEFAULT_WAIT_MS,
            Some(Ok(ms)) if ms <= MAX_WAIT_MS => ms,
            Some(_) => {
                errors.push(FieldError::new(
                    "wait_ms",
                    format!("must be a whole number of milliseconds from 0 to {MAX_WAIT_MS}"),
                ));
                0
            }
        };
        let seen = match self.wait_for_change_from.as_deref() {
            None => {
                if self.wait_ms.is_some() {
                    errors.push(FieldError::new(
                        "wait_for_change_from",
                        "is needed with wait_ms: the order's version or status you have",
                    ));
                }
                None
            }
            Some(value) => {
                let seen = seen(value);
                if seen.is_none() {
                    errors.push(FieldError::new(
                        "wait_for_change_from",
                        "must be the order's version (a number) or a status such as pending",
                    ));
                }
                seen
            }
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        let mut wait = Duration::from_millis(wait_ms);
        if let Some(deadline) = Deadline::current() {
            wait = wait.min(deadline.remaining().saturating_sub(ANSWER_MARGIN));
        }
        Ok(seen.map(|seen| Wait {
            seen,
            until: Instant::now() + wait,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(from: Option<&str>, wait_ms: Option<&str>) -> WaitQuery {
        WaitQuery {
            wait_for_change_from: from.map(str::to_owned),
            wait_ms: wait_ms.map(str::to_owned),
        }
    }

    fn refused(from: Option<&str>, wait_ms: Option<&str>) -> Vec<String> {
        let problem = query(from, wait_ms).parse().unwrap_err();
        assert_eq!(problem.status, 422);
        problem.errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_version_or_a_status_is_what_the_client_has() {
        let wait = query(Some("3"), Some("100")).parse().unwrap().unwrap();
        assert_eq!(wait.seen, Seen::Version(3));
        let wait = query(Some("pending"), None).parse().unwrap().unwrap();
        assert_eq!(wait.seen, Seen::Status(Status::Pending));
        assert!(query(None, None).parse().unwrap().is_none(), "no long poll");
    }

    #[test]
    fn bad_waits_and_bad_states_are_named() {
        assert_eq!(refused(Some("pending"), Some("-1")), ["wait_ms"]);
        assert_eq!(refused(Some("pending"), Some("30001")), ["wait_ms"]);
        assert_eq!(refused(Some("pending"), Some("soon")), ["wait_ms"]);
        assert_eq!(refused(Some("lost"), None), ["wait_for_change_from"]);
        assert_eq!(refused(Some("-2"), None), ["wait_for_change_from"]);
        assert_eq!(refused(None, Some("100")), ["wait_for_change_from"]);
    }
}
