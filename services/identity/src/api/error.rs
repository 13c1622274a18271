//! The one place where identity's errors become HTTP answers.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use mercato_kit::problems::invalid_fields;
use mercato_runtime::{Problem, Transient};

use crate::accounts::AccountError;
use crate::service_grant::GrantError;

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
    oauth_error_with(StatusCode::BAD_REQUEST, code, description)
}

fn oauth_error_with(status: StatusCode, code: &'static str, description: &str) -> Problem {
    Problem::new(
        status,
        &format!("oauth-{}", code.replace('_', "-")),
        "Token request refused",
    )
    .with_detail(description)
    .with_extension("error", code)
    .with_extension("error_description", description)
}

/// A refused `client_credentials` request: `invalid_client` is `401` (RFC 6749 §5.2), the others
/// `400`; a key file that cannot be read is ours (`500`), and logged.
pub fn grant_error(error: &GrantError) -> Problem {
    match error {
        GrantError::InvalidRequest(why) => oauth_error("invalid_request", why),
        GrantError::InvalidClient(why) => oauth_error_with(StatusCode::UNAUTHORIZED, "invalid_client", why),
        GrantError::UnauthorizedClient => oauth_error("unauthorized_client", &error.to_string()),
        GrantError::InvalidTarget(_) => oauth_error("invalid_target", &error.to_string()),
        GrantError::Keys(_) | GrantError::Token(_) => {
            tracing::error!(%error, "cannot issue a service token");
            Problem::internal()
        }
    }
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
            AccountError::Invalid(fields) => invalid_fields(fields),
            AccountError::EmailTaken => Problem::conflict("an account with this email already exists"),
            AccountError::InvalidGrant(why) => oauth_error("invalid_grant", why),
            AccountError::UnknownUser => Problem::not_found("the user no longer exists"),
            other => Problem::from_failure(&other),
        };
        problem.into_response()
    }
}
