use axum::extract::{Path, State};
use mercato_contracts::money::Money;
use mercato_contracts::timestamp::rfc3339;
use mercato_runtime::{Caller, Json};
use mercato_storage::Db;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::store::{self, Payment};

/// A payment as its customer sees it: no card token, no provider ids.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Payment)]
pub struct PaymentBody {
    order_id: String,
    #[schema(value_type = String, pattern = "^(pending|captured|failed|refund_pending|refunded)$")]
    status: &'static str,
    amount: Money,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl PaymentBody {
    pub(super) fn new(p: Payment) -> Result<Self, ApiError> {
        Ok(Self {
            amount: crate::events::amount_of(&p).map_err(|_| ApiError::Corrupt(p.order_id.clone()))?,
            order_id: p.order_id,
            status: p.status.as_str(),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        })
    }
}

#[utoipa::path(
    get,
    path = "/api/payments/{order_id}",
    operation_id = "get_payment",
    tag = "payments",
    summary = "The payment of one of the caller's orders",
    security(("bearer" = [])),
    params(("order_id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The payment", body = PaymentBody),
        (status = 404, description = "No payment for an order of the caller's"),
    )
)]
pub async fn get(
    State(db): State<Db>,
    caller: Caller,
    Path(order_id): Path<String>,
) -> Result<Json<PaymentBody>, ApiError> {
    match store::find(&db, &order_id).await? {
        Some(payment) if payment.customer_id == caller.subject => Ok(Json(PaymentBody::new(payment)?)),
        _ => Err(ApiError::NotFound),
    }
}
