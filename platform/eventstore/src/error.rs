//! The event store's errors, and the one place a storage conflict becomes a version conflict.

use mercato_storage::StorageError;
use mercato_storage::sqlx;

use crate::store::ExpectedVersion;

/// Why an append or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    /// The stream was not at the version the writer expected: someone else appended first. The
    /// caller reloads the stream, decides again and retries; nothing was written.
    #[error("stream {stream_id:?} expected {expected}, {}", describe_actual(*.actual))]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        /// The version found, or `None` when the clash surfaced as a duplicate version at insert
        /// time (a writer whose snapshot predates the other commit), when it cannot be re-read.
        actual: Option<i64>,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An event that cannot be stored or read as an envelope.
    #[error("malformed event: {0}")]
    Malformed(String),
}

impl EventStoreError {
    /// True when retrying the same transaction may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Storage(e) if e.is_transient())
    }

    /// True for an expected-version conflict: reload the stream and decide again.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

impl From<sqlx::Error> for EventStoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Storage(error.into())
    }
}

impl From<mercato_messaging::EnvelopeError> for EventStoreError {
    fn from(error: mercato_messaging::EnvelopeError) -> Self {
        Self::Malformed(error.to_string())
    }
}

fn describe_actual(actual: Option<i64>) -> String {
    match actual {
        Some(0) => "but it does not exist".into(),
        Some(version) => format!("but it is at version {version}"),
        None => "but another writer appended that version first".into(),
    }
}

/// Turns the unique violation on `(stream_id, version)` into [`EventStoreError::Conflict`]; any
/// other storage error (a duplicate event id included) stays what it is.
pub(crate) fn classify_insert(
    error: StorageError,
    stream_id: &str,
    expected: ExpectedVersion,
) -> EventStoreError {
    match &error {
        StorageError::Conflict(what) if names_stream_version(what) => EventStoreError::Conflict {
            stream_id: stream_id.to_owned(),
            expected,
            actual: None,
        },
        _ => EventStoreError::Storage(error),
    }
}

/// PostgreSQL reports the constraint by name; SQLite reports a message naming its columns.
fn names_stream_version(what: &str) -> bool {
    what == "events_stream_version" || what.contains("events.stream_id, events.version")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_stream_version_is_a_conflict_on_either_backend() {
        for what in [
            "events_stream_version",
            "UNIQUE constraint failed: events.stream_id, events.version",
        ] {
            let err = classify_insert(
                StorageError::Conflict(what.into()),
                "order-1",
                ExpectedVersion::Exact(2),
            );
            assert!(
                matches!(&err, EventStoreError::Conflict { stream_id, actual: None, .. } if stream_id == "order-1"),
                "{what}: {err:?}"
            );
        }
    }

    #[test]
    fn a_duplicate_event_id_stays_a_storage_conflict() {
        for what in ["events_event_id", "UNIQUE constraint failed: events.event_id"] {
            let err = classify_insert(StorageError::Conflict(what.into()), "s", ExpectedVersion::Any);
            assert!(
                matches!(&err, EventStoreError::Storage(StorageError::Conflict(_))),
                "{what}: {err:?}"
            );
            assert!(!err.is_conflict());
        }
    }

    #[test]
    fn a_conflict_says_what_was_expected_and_what_was_found() {
        let err = EventStoreError::Conflict {
            stream_id: "order-1".into(),
            expected: ExpectedVersion::NoStream,
            actual: Some(3),
        };
        assert_eq!(
            err.to_string(),
            "stream \"order-1\" expected no stream, but it is at version 3"
        );
        let err = EventStoreError::Conflict {
            stream_id: "order-1".into(),
            expected: ExpectedVersion::Exact(2),
            actual: Some(0),
        };
        assert_eq!(
            err.to_string(),
            "stream \"order-1\" expected version 2, but it does not exist"
        );
    }

    #[test]
    fn only_transient_storage_errors_are_transient() {
        let busy = EventStoreError::Storage(StorageError::Transient(sqlx::Error::PoolTimedOut));
        assert!(busy.is_transient());
        assert!(!EventStoreError::Malformed("x".into()).is_transient());
        assert!(!EventStoreError::Storage(StorageError::Conflict("x".into())).is_transient());
    }
}
