//! Failures a client did not cause (a busy or unreachable database or bus, a fault of ours), and
//! the one answer every service gives for them: `503` with `Retry-After` when the same request may
//! succeed shortly, `500` otherwise. The cause chain is logged; its text never reaches the client.

use std::error::Error;
use std::fmt;

use mercato_storage::StorageError;

use crate::problem::Problem;

/// What a client is told when retrying shortly may succeed.
pub const BUSY: &str = "the service is busy, try again shortly";

/// The `Retry-After` hint, in seconds, sent with [`BUSY`].
pub const RETRY_AFTER_SECS: u64 = 1;

/// Whether retrying the same work may succeed: a property of the error, decided once, by the
/// error's own `is_transient()`.
pub trait Transient: Error {
    fn is_transient(&self) -> bool;
}

impl Transient for StorageError {
    fn is_transient(&self) -> bool {
        StorageError::is_transient(self)
    }
}

/// An error and its sources on one line, for logs; a source whose text its parent already ends
/// with (`"database unavailable: pool timed out"`) is not repeated.
#[derive(Clone, Copy)]
pub struct CauseChain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parent = self.0.to_string();
        f.write_str(&parent)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !parent.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            parent = text;
            next = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for CauseChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Logs `error` as the answer to `what`: a warning when it is transient, an error otherwise.
/// Returns whether it was transient.
fn log(error: &impl Transient, what: &str) -> bool {
    let transient = error.is_transient();
    if transient {
        tracing::warn!(error.cause_chain = %CauseChain(error), "{what} failed: busy or unreachable");
    } else {
        tracing::error!(error.cause_chain = %CauseChain(error), "{what} failed");
    }
    transient
}

impl Problem {
    /// The answer to a failure the client did not cause: `503` with `Retry-After` when `error` is
    /// transient, `500` otherwise. Logs the cause chain; none of its text is in the answer.
    pub fn from_failure(error: &impl Transient) -> Self {
        if log(error, "request") {
            Self::unavailable(BUSY, RETRY_AFTER_SECS)
        } else {
            Self::internal()
        }
    }
}

/// The gRPC answer to a failure the caller did not cause: `UNAVAILABLE` (which clients retry)
/// when `error` is transient, `INTERNAL` otherwise. Logged as [`Problem::from_failure`] does.
pub fn status(error: &impl Transient) -> tonic::Status {
    if log(error, "gRPC call") {
        tonic::Status::unavailable(BUSY)
    } else {
        tonic::Status::internal("the call could not be completed; it has been logged")
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use http::{StatusCode, header};
    use http_body_util::BodyExt;
    use mercato_storage::sqlx;

    use super::*;

    const SECRET: &str = "password authentication failed for user \"shop\" at 10.0.0.7";

    fn busy() -> StorageError {
        StorageError::Unavailable(sqlx::Error::Protocol(SECRET.into()))
    }

    fn broken() -> StorageError {
        StorageError::Database(sqlx::Error::Protocol(SECRET.into()))
    }

    async fn answer(problem: Problem) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = problem.into_response();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("10.0.0.7"),
            "internal text reached the client: {}",
            String::from_utf8_lossy(&bytes)
        );
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_transient_failure_is_503_with_retry_after_and_no_internal_text() {
        let (status, headers, body) = answer(Problem::from_failure(&busy())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(headers[header::CONTENT_TYPE], crate::problem::CONTENT_TYPE);
        assert_eq!(body["status"], 503);
        assert_eq!(body["type"], "urn:mercato:problem:unavailable");
        assert_eq!(body["detail"], BUSY);
    }

    #[tokio::test]
    async fn any_other_failure_is_500_without_retry_after_or_internal_text() {
        let (status, headers, body) = answer(Problem::from_failure(&broken())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(headers.get(header::RETRY_AFTER).is_none());
        assert_eq!(body["status"], 500);
        assert_eq!(body["type"], "urn:mercato:problem:internal");
    }

    #[test]
    fn grpc_answers_follow_the_same_classification_without_internal_text() {
        let unavailable = status(&busy());
        assert_eq!(unavailable.code(), tonic::Code::Unavailable);
        assert_eq!(unavailable.message(), BUSY);
        let internal = status(&broken());
        assert_eq!(internal.code(), tonic::Code::Internal);
        assert!(!internal.message().contains("10.0.0.7"));
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("loading the order failed: {0}")]
        Quoting(#[source] StorageError),
        #[error("loading the order failed")]
        Wrapping(#[source] StorageError),
        #[error(transparent)]
        Transparent(StorageError),
    }

    impl Transient for Outer {
        fn is_transient(&self) -> bool {
            match self {
                Self::Quoting(e) | Self::Wrapping(e) | Self::Transparent(e) => e.is_transient(),
            }
        }
    }

    #[test]
    fn the_cause_chain_names_each_cause_once() {
        let quoted = Outer::Quoting(broken());
        assert_eq!(
            CauseChain(&quoted).to_string(),
            format!(
                "loading the order failed: database error: encountered unexpected or invalid data: {SECRET}"
            )
        );
        let wrapped = Outer::Wrapping(broken());
        assert_eq!(
            CauseChain(&wrapped).to_string(),
            format!(
                "loading the order failed: database error: encountered unexpected or invalid data: {SECRET}"
            )
        );
        let transparent = Outer::Transparent(busy());
        assert_eq!(
            CauseChain(&transparent).to_string(),
            format!("database unavailable: encountered unexpected or invalid data: {SECRET}")
        );
    }

    #[tokio::test]
    async fn a_service_error_is_classified_by_its_own_transience() {
        let (status, ..) = answer(Problem::from_failure(&Outer::Transparent(busy()))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, ..) = answer(Problem::from_failure(&Outer::Wrapping(broken()))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
