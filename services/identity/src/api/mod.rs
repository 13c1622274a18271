//! Identity's HTTP API.

mod error;
mod register;
mod token;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use mercato_security::Verifier;

use crate::accounts::Accounts;
use crate::service_grant::ServiceGrant;

pub use error::ApiError;

/// Identity's routes as the public OpenAPI document describes them.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    mercato_contracts::openapi_paths!(
        register::register,
        token::token,
        token::revoke,
        users::me,
        users::jwks
    )
}

/// Every route of the service.
pub fn router(accounts: Arc<Accounts>, services: Arc<ServiceGrant>, verifier: Verifier) -> Router {
    Router::new()
        .route("/api/identity/register", post(register::register))
        .route("/api/identity/token", post(token::token))
        .route("/api/identity/revoke", post(token::revoke))
        .route("/api/identity/me", get(users::me))
        .route("/admin/users", get(users::by_email))
        .route("/.well-known/jwks.json", get(users::jwks))
        .layer(axum::Extension(verifier))
        .layer(axum::Extension(services))
        .with_state(accounts)
}
