//! Orders' HTTP API. A customer sees only their own orders: another customer's order id is
//! `404`, exactly like an id that does not exist.

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

pub fn router(state: State, verifier: Verifier) -> Router {
    Router::new()
        .route("/api/orders", post(orders::place).get(orders::list))
        .route("/api/orders/{id}", get(orders::get))
        .route("/api/orders/{id}/cancel", post(orders::cancel))
        .route("/api/orders/{id}/ship", post(orders::ship))
        .route("/api/orders/{id}/deliver", post(orders::deliver))
        .layer(axum::Extension(verifier))
        .with_state(Arc::new(state))
}
