//! The one place where notifications' errors become HTTP answers.

use axum::response::{IntoResponse, Response};
use mercato_runtime::Problem;
use mercato_storage::StorageError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid query parameters")]
    Invalid(Problem),
    #[error("malformed query string: {0}")]
    MalformedQuery(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::Invalid(problem) => problem,
            Self::MalformedQuery(detail) => Problem::bad_request(detail),
            Self::Storage(e) => Problem::from_failure(&e),
        };
        problem.into_response()
    }
}
