//! Orders' HTTP API. A customer sees only their own orders: another customer's order id is
//! `404`, exactly like an id that does not exist.

mod admin;
mod error;
mod input;
mod orders;
mod output;
mod timeline;
mod wait;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use mercato_security::Verifier;

use crate::backlog::Backlog;
use crate::checkout::Checkout;
use crate::lookups::Lookups;
use crate::watch::Changes;

pub use error::ApiError;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct State {
    pub checkout: Arc<Checkout>,
    /// The customer and the products, cached.
    pub lookups: Lookups,
    /// Orders in flight, and the admission of new ones.
    pub backlog: Arc<Backlog>,
    /// The orders long polls wait on.
    pub changes: Arc<Changes>,
}

/// Orders' part of the public OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(orders::place, orders::list, orders::get, orders::cancel, orders::ship, orders::deliver),
    modifiers(&Links)
)]
struct Doc;

/// Orders' routes as the public OpenAPI document describes them.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    <Doc as utoipa::OpenApi>::openapi()
}

/// Where a placed order leads, so that a client (or a stateful test) can follow it by its id.
struct Links;

impl utoipa::Modify for Links {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::link::LinkBuilder;
        let Some(created) = doc
            .paths
            .paths
            .get_mut("/api/orders")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.responses.responses.get_mut("201"))
        else {
            return;
        };
        let RefOr::T(created) = created else { return };
        for (name, operation) in [
            ("GetOrder", "get_order"),
            ("CancelOrder", "cancel_order"),
            ("GetPayment", "get_payment"),
        ] {
            let parameter = if operation == "get_payment" {
                "order_id"
            } else {
                "id"
            };
            created.links.insert(
                name.to_owned(),
                RefOr::T(
                    LinkBuilder::new()
                        .operation_id(operation)
                        .parameter(parameter, "$response.body#/id")
                        .build(),
                ),
            );
        }
    }
}

pub fn router(state: State, verifier: Verifier) -> Router {
    Router::new()
        .route("/api/orders", post(orders::place).get(orders::list))
        .route("/api/orders/{id}", get(orders::get))
        .route("/api/orders/{id}/cancel", post(orders::cancel))
        .route("/api/orders/{id}/ship", post(orders::ship))
        .route("/api/orders/{id}/deliver", post(orders::deliver))
        .route("/admin/orders", get(admin::by_customer))
        .route("/admin/orders/{id}", get(admin::order))
        .route("/admin/funnel", get(admin::funnel))
        .layer(axum::Extension(verifier))
        .with_state(Arc::new(state))
}
