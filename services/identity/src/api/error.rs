//! The one place where identity's errors become HTTP answers.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use mercato_runtime::{FieldError, Problem, Transient};

use crate::accounts::AccountError;

/// An account error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub AccountError);

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        Self(e)
    }
}

/// An OAuth 2 error (RFC 6749 §5.2) that is also a problem document.
pub fn oauth_error(code: &'static str, description: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        &format!("oauth-{}", code.replace('_', "-")),
        "Token request refused",
    )
    .with_detail(description)
    .with_extension("error", code)
    .with_extension("error_description", description)
}

/// Only the database can be busy; token and hashing faults are ours (`500`).
impl Transient for AccountError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Storage(e) if e.is_transient())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self.0 {
            AccountError::Invalid(fields) => {
                Problem::validation(fields.into_iter().map(|(f, m)| FieldError::new(f, m)).collect())
            }
            AccountError::EmailTaken => Problem::conflict("an account with this email already exists"),
            AccountError::InvalidGrant(why) => oauth_error("invalid_grant", why),
            AccountError::UnknownUser => Problem::not_found("the user no longer exists"),
            other => Problem::from_failure(&other),
        };
        problem.into_response()
    }
}
