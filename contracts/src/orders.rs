//! What the orders service publishes (category `orders`): the order's own events, and the
//! commands its checkout saga sends to inventory and payments. A command is an event addressed
//! to one service; that service's inbox applies it once and answers with its own events.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::money::Money;

/// The bus category of orders' events and commands.
pub const CATEGORY: &str = "orders";

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i64,
}

/// Command to inventory: hold these lines for the order, all or nothing, until `expires_at`
/// (Unix milliseconds). Stream: the order id. Answered by `StockReserved` or
/// `StockReservationFailed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReserveStock {
    pub order_id: String,
    pub lines: Vec<OrderLine>,
    pub expires_at: i64,
}

/// Command to inventory: give back what was held for the order (compensation). Releasing
/// nothing, or twice, is fine. Answered by `StockReleased`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseStock {
    pub order_id: String,
    pub reason: String,
}

/// Command to inventory: the order is confirmed; the held stock is sold. Answered by
/// `ReservationCommitted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommitReservation {
    pub order_id: String,
}

/// Command to payments: charge the card once for the order. `idempotency_key` is stable per
/// order, so a retried command never charges twice. Answered by `PaymentCaptured` or
/// `PaymentFailed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChargePayment {
    pub order_id: String,
    pub customer_id: String,
    pub amount: Money,
    pub card_token: String,
    pub idempotency_key: String,
}

/// Command to payments: refund whatever was captured for the order (a late capture after the
/// saga gave up, or a cancellation). Refunding nothing, or twice, is fine. Answered by
/// `PaymentRefunded` when something was refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefundPayment {
    pub order_id: String,
    pub reason: String,
}

/// A customer placed an order; the checkout saga starts. Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<PricedLine>,
    pub total: Money,
}

/// A line with the unit price it was sold at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PricedLine {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
}

/// Stock is held and the payment captured: the order will be fulfilled. Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderConfirmed {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<PricedLine>,
    pub total: Money,
}

/// The order ended without being fulfilled. `reason` is one of `out_of_stock`,
/// `unknown_product`, `payment_declined`, `payment_timeout`, `reservation_timeout`,
/// `customer_cancelled`.
/// Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderCancelled {
    pub order_id: String,
    pub customer_id: String,
    pub reason: String,
}

/// The order left the warehouse. Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderShipped {
    pub order_id: String,
    pub customer_id: String,
}

/// The order reached the customer. Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderDelivered {
    pub order_id: String,
    pub customer_id: String,
}

crate::events!(
    ReserveStock = 1,
    ReleaseStock = 1,
    CommitReservation = 1,
    ChargePayment = 1,
    RefundPayment = 1,
    OrderPlaced = 1,
    OrderConfirmed = 1,
    OrderCancelled = 1,
    OrderShipped = 1,
    OrderDelivered = 1
);
