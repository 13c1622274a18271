//! What the payments service publishes (category `payments`): its answers to the saga's payment
//! commands.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::money::Money;

/// The bus category of payments' events.
pub const CATEGORY: &str = "payments";

/// The card was charged. Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentCaptured {
    pub order_id: String,
    pub payment_id: String,
    pub amount: Money,
}

/// Why a charge did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFailure {
    /// The provider declined the card.
    Declined,
    /// The provider kept failing or did not answer within the payment service's own limits.
    ProviderUnavailable,
}

/// The card was not charged. Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentFailed {
    pub order_id: String,
    pub reason: PaymentFailure,
}

/// A captured charge was refunded. Stream: the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentRefunded {
    pub order_id: String,
    pub payment_id: String,
    pub amount: Money,
}

crate::events!(PaymentCaptured = 1, PaymentFailed = 1, PaymentRefunded = 1);
