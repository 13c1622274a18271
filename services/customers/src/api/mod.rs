//! Customers' HTTP API: the caller's own profile and preferences, nothing else. There is no route
//! that takes a customer id, so no customer can name another's.

mod error;
mod preferences;
mod profile;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use mercato_security::Verifier;

use crate::profiles::Customers;

pub use error::ApiError;

/// How a change of the caller's profile or preferences is refused.
#[derive(Debug, utoipa::IntoResponses)]
#[expect(
    dead_code,
    reason = "it describes answers in the OpenAPI document and is never a value"
)]
enum ChangeRefused {
    #[response(status = 404, description = "No profile yet")]
    NoProfile,
    #[response(status = 409, description = "The profile changed meanwhile; try again")]
    Changed,
}

/// Customers's routes as the public OpenAPI document describes them.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    mercato_contracts::openapi_paths!(profile::get, profile::patch, preferences::get, preferences::put)
}

pub fn router(customers: Arc<Customers>, verifier: Verifier) -> Router {
    Router::new()
        .route("/api/customers/me", get(profile::get).patch(profile::patch))
        .route(
            "/api/customers/me/preferences",
            get(preferences::get).put(preferences::put),
        )
        .layer(axum::Extension(verifier))
        .with_state(customers)
}
