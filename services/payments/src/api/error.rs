//! The one place where payments' errors become HTTP answers.

use axum::response::{IntoResponse, Response};
use mercato_runtime::Problem;
use mercato_storage::StorageError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such payment")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::NotFound => Problem::not_found("there is no payment for this order"),
            Self::Storage(e) => Problem::from_failure(&e),
        };
        problem.into_response()
    }
}
