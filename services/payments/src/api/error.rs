//! The one place where payments' errors become HTTP answers.

use axum::response::{IntoResponse, Response};
use mercato_runtime::{Problem, Transient};
use mercato_storage::StorageError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such payment")]
    NotFound,
    /// A stored payment that is not a valid payment: ours to fix, never the client's.
    #[error("payment for order {0} holds a malformed currency")]
    Corrupt(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Transient for ApiError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Storage(e) if e.is_transient())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::NotFound => Problem::not_found("there is no payment for this order"),
            other => Problem::from_failure(&other),
        };
        problem.into_response()
    }
}
