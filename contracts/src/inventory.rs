//! What the inventory service publishes (category `inventory`): its answers to the saga's stock
//! commands, and product changes (for caches).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::money::Money;
use crate::orders::OrderLine;

/// The bus category of inventory's events.
pub const CATEGORY: &str = "inventory";

/// Every line of the order is held until `expires_at` (Unix milliseconds). Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockReserved {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    pub expires_at: i64,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationFailure {
    OutOfStock,
    UnknownProduct,
}

/// Nothing was held: a line could not be reserved. Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockReservationFailed {
    pub order_id: String,
    pub reason: ReservationFailure,
    /// The first line that could not be served.
    pub sku: String,
}

/// What was held for the order is available again (released, or expired). Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockReleased {
    pub order_id: String,
    /// `released` (asked to) or `expired` (its time ran out).
    pub cause: String,
}

/// The held stock is sold. Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReservationCommitted {
    pub order_id: String,
}

/// A product's price, stock or description changed. Stream: the sku.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductChanged {
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub available: i64,
}

crate::events!(
    StockReserved = 1,
    StockReservationFailed = 1,
    StockReleased = 1,
    ReservationCommitted = 1,
    ProductChanged = 1
);
