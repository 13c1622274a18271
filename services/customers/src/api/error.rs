//! The one place where customers' errors become HTTP answers.

use axum::response::{IntoResponse, Response};
use mercato_runtime::{FieldError, Problem, Transient};

use crate::profiles::CustomerError;

#[derive(Debug)]
pub struct ApiError(pub CustomerError);

impl From<CustomerError> for ApiError {
    fn from(e: CustomerError) -> Self {
        Self(e)
    }
}

impl Transient for CustomerError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Storage(e) => e.is_transient(),
            Self::EventStore(e) => e.is_transient(),
            _ => false,
        }
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
            other => Problem::from_failure(&other),
        };
        problem.into_response()
    }
}
