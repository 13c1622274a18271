//! The one place where customers' errors become HTTP answers.

use axum::response::{IntoResponse, Response};
use mercato_runtime::{FieldError, Problem};

use crate::profiles::CustomerError;

#[derive(Debug)]
pub struct ApiError(pub CustomerError);

impl From<CustomerError> for ApiError {
    fn from(e: CustomerError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self.0 {
            CustomerError::NotFound => Problem::not_found(
                "there is no customer profile for this account yet; it is created shortly after registration",
            ),
            CustomerError::Invalid(invalid) => Problem::validation(
                invalid
                    .0
                    .into_iter()
                    .map(|(f, m)| FieldError::new(f, m))
                    .collect(),
            ),
            CustomerError::Contended => Problem::conflict("the profile changed while updating it; try again"),
            CustomerError::Storage(e) if e.is_transient() => {
                tracing::warn!(error = %e, "database busy or unreachable");
                Problem::unavailable("the service is busy, try again shortly", 1)
            }
            CustomerError::EventStore(e) if e.is_transient() => {
                tracing::warn!(error = %e, "event store busy or unreachable");
                Problem::unavailable("the service is busy, try again shortly", 1)
            }
            other => {
                tracing::error!(error = %other, cause = ?std::error::Error::source(&other), "request failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
