use axum::extract::{Path, State};
use mercato_contracts::money::Money;
use mercato_runtime::{Caller, Json};
use mercato_storage::Db;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
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

pub(super) fn rfc3339(unix_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn times_are_rfc3339_in_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
