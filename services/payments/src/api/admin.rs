//! `GET /admin/payments/{order_id}`: an order's payment with what the provider was asked, each
//! call on its own line, for the operations console. Admin only; not part of the public API document.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use mercato_contracts::timestamp::rfc3339;
use mercato_runtime::{Caller, Json};
use mercato_storage::Db;
use serde::Serialize;

use super::ApiError;
use super::payments::PaymentBody;
use crate::store;

/// The payment as the customer sees it, and the provider's side of it.
#[derive(Debug, Serialize)]
struct AdminPayment {
    #[serde(flatten)]
    payment: PaymentBody,
    /// Provider calls made for the current step (the charge, then the refund).
    attempts: i64,
    last_error: Option<String>,
    provider_charge_id: Option<String>,
    provider_refund_id: Option<String>,
    refund_requested: bool,
    next_attempt_at: String,
    /// Every provider call, oldest first.
    provider_attempts: Vec<AttemptBody>,
}

/// One provider call.
#[derive(Debug, Serialize)]
struct AttemptBody {
    step: String,
    attempt: i64,
    at: String,
    duration_ms: i64,
    outcome: String,
    provider_id: Option<String>,
    error: Option<String>,
}

impl From<store::Attempt> for AttemptBody {
    fn from(a: store::Attempt) -> Self {
        Self {
            step: a.step,
            attempt: a.attempt,
            at: rfc3339(a.started_at),
            duration_ms: a.duration_ms,
            outcome: a.outcome,
            provider_id: a.provider_id,
            error: a.error,
        }
    }
}

pub async fn get(State(db): State<Db>, caller: Caller, Path(order_id): Path<String>) -> Response {
    if let Err(refused) = caller.require_role("admin") {
        return refused.into_response();
    }
    let found = match store::find(&db, &order_id).await {
        Ok(Some(found)) => found,
        Ok(None) => return ApiError::NotFound.into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let provider_attempts = match store::attempts(&db, &order_id).await {
        Ok(log) => log.into_iter().map(AttemptBody::from).collect(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let attempts = found.attempts;
    let last_error = found.last_error.clone();
    let provider_charge_id = found.provider_charge_id.clone();
    let provider_refund_id = found.provider_refund_id.clone();
    let refund_requested = found.refund_requested;
    let next_attempt_at = rfc3339(found.next_attempt_at);
    match PaymentBody::new(found) {
        Ok(payment) => Json(AdminPayment {
            payment,
            attempts,
            last_error,
            provider_charge_id,
            provider_refund_id,
            refund_requested,
            next_attempt_at,
            provider_attempts,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}
