//! What clients see of an order.

use mercato_contracts::money::Money;
use mercato_contracts::timestamp::rfc3339;
use serde::Serialize;
use utoipa::ToSchema;

use super::timeline::Timeline;
use crate::store::OrderView;

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderLine)]
pub struct ItemOut {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderPayment)]
pub struct PaymentOut {
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderOut {
    pub id: String,
    #[schema(pattern = "^(pending|confirmed|shipped|delivered|cancelled)$")]
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    pub items: Vec<ItemOut>,
    pub total: Money,
    pub payment: PaymentOut,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Changes with every event of the order: what a long poll waits to change from.
    pub version: i64,
    /// When each saga step happened; on a single order's answer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderPage)]
pub struct Page {
    pub items: Vec<OrderOut>,
    pub next_page_token: Option<String>,
}

impl From<OrderView> for OrderOut {
    fn from(v: OrderView) -> Self {
        let items = v
            .lines
            .into_iter()
            .map(|l| ItemOut {
                // Placement refused totals past the range, so a line's total always fits.
                line_total: l
                    .unit_price
                    .checked_mul(l.quantity)
                    .unwrap_or(Money::new(i64::MAX, l.unit_price.currency)),
                sku: l.sku,
                name: l.name,
                quantity: l.quantity,
                unit_price: l.unit_price,
            })
            .collect();
        Self {
            id: v.order_id,
            status: v.status,
            cancel_reason: v.cancel_reason,
            items,
            total: v.total,
            payment: PaymentOut {
                status: v.payment_status,
            },
            created_at: rfc3339(v.created_at),
            updated_at: rfc3339(v.updated_at),
            version: v.version,
            timeline: None,
        }
    }
}
