//! Inventory's APIs on its one listener: the public and admin HTTP routes under
//! `/api/products`, and the internal gRPC service. `error` maps failures for both.

mod error;
pub mod grpc;
pub mod page;
mod products;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, put};
use mercato_contracts::grpc::inventory::inventory_server::InventoryServer;
use mercato_security::Verifier;

use crate::catalogue::Catalogue;

/// Inventory's routes as the public OpenAPI document describes them.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    mercato_contracts::openapi_paths!(
        products::list,
        products::get,
        products::put_stock,
        products::put_price
    )
}

/// The internal API, `GetProducts`. It shares the HTTP listener: it arrives as HTTP/2
/// (cleartext, prior knowledge) and is routed by its `/mercato.inventory.v1.Inventory/` path.
pub fn internal_router(catalogue: Arc<Catalogue>) -> Router {
    tonic::service::Routes::new(InventoryServer::new(grpc::InventoryGrpc::new(catalogue))).into_axum_router()
}

/// The public routes of the service.
pub fn router(catalogue: Arc<Catalogue>, verifier: Verifier) -> Router {
    Router::new()
        .route("/api/products", get(products::list))
        .route("/api/products/{sku}", get(products::get))
        .route("/api/products/{sku}/stock", put(products::put_stock))
        .route("/api/products/{sku}/price", put(products::put_price))
        .layer(axum::Extension(verifier))
        .with_state(catalogue)
}
