//! The one place where customers' errors become HTTP answers.

use axum::response::{IntoResponse, Response};
use mercato_kit::problems::invalid_fields;
use mercato_runtime::{Problem, Transient};

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
            CustomerError::Invalid(invalid) => invalid_fields(invalid.0),
            CustomerError::Contended => Problem::conflict("the profile changed while updating it; try again"),
            other => Problem::from_failure(&other),
        };
        problem.into_response()
    }
}
