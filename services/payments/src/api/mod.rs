//! Payments' HTTP API: a customer reads the payment of one of their own orders. A payment of
//! someone else's order answers `404`, exactly like one that does not exist, so ids cannot be
//! probed.

mod admin;
mod error;
mod payments;

use axum::Router;
use axum::routing::get;
use mercato_security::Verifier;
use mercato_storage::Db;

pub use error::ApiError;

/// Payments's routes as the public OpenAPI document describes them.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    mercato_contracts::openapi_paths!(payments::get)
}

pub fn router(db: Db, verifier: Verifier) -> Router {
    Router::new()
        .route("/api/payments/{order_id}", get(payments::get))
        .route("/admin/payments/{order_id}", get(admin::get))
        .layer(axum::Extension(verifier))
        .with_state(db)
}
