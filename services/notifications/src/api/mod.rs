//! Notifications' HTTP API: the caller's own mailbox, nothing else. There is no route that
//! takes a customer id, so no customer can read another's messages.

mod admin;
mod error;
mod notifications;

use axum::Router;
use axum::routing::get;
use mercato_security::Verifier;
use mercato_storage::Db;

pub use error::ApiError;

/// Notifications's routes as the public OpenAPI document describes them.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    mercato_contracts::openapi_paths!(notifications::list)
}

pub fn router(db: Db, verifier: Verifier) -> Router {
    Router::new()
        .route("/api/notifications", get(notifications::list))
        .route("/admin/notifications", get(admin::for_events))
        .layer(axum::Extension(verifier))
        .with_state(db)
}
