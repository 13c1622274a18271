//! The payment row as stored: its columns, reading one back, and finding an order's payment.

use mercato_storage::sqlx::any::AnyRow;
use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Db, StorageError};

use crate::domain::PaymentStatus;

pub(super) const COLUMNS: &str = "order_id, payment_id, customer_id, idempotency_key, amount_minor, currency, \
    card_token, status, provider_charge_id, provider_refund_id, attempts, next_attempt_at, \
    refund_requested, last_error, correlation_id, traceparent, charge_command_id, \
        refund_command_id, created_at, updated_at, failure_reported";

/// One order's payment, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub order_id: String,
    pub payment_id: String,
    pub customer_id: String,
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub card_token: String,
    pub status: PaymentStatus,
    pub provider_charge_id: Option<String>,
    pub provider_refund_id: Option<String>,
    /// Provider calls made for the current step (the charge, then the refund).
    pub attempts: i64,
    /// Unix ms: when the worker may next pick the row up (or when its lease ends).
    pub next_attempt_at: i64,
    pub refund_requested: bool,
    /// The saga was told the charge failed (`provider_unavailable`) while its outcome was still
    /// unknown; the worker goes on asking the provider, so a charge that did land is refunded.
    pub failure_reported: bool,
    pub last_error: Option<String>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
    pub charge_command_id: Option<String>,
    pub refund_command_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Payment {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, StorageError> {
        let status = status(row)?;
        Ok(Self {
            order_id: row.try_get("order_id")?,
            payment_id: row.try_get("payment_id")?,
            customer_id: row.try_get("customer_id")?,
            idempotency_key: row.try_get("idempotency_key")?,
            amount_minor: row.try_get("amount_minor")?,
            currency: row.try_get("currency")?,
            card_token: row.try_get("card_token")?,
            status,
            provider_charge_id: row.try_get("provider_charge_id")?,
            provider_refund_id: row.try_get("provider_refund_id")?,
            attempts: row.try_get("attempts")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
            refund_requested: row.try_get::<i64, _>("refund_requested")? != 0,
            failure_reported: row.try_get::<i64, _>("failure_reported")? != 0,
            last_error: row.try_get("last_error")?,
            correlation_id: row.try_get("correlation_id")?,
            traceparent: row.try_get("traceparent")?,
            charge_command_id: row.try_get("charge_command_id")?,
            refund_command_id: row.try_get("refund_command_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// The order's payment.
///
/// # Errors
/// The database failed.
pub async fn find(db: &Db, order_id: &str) -> Result<Option<Payment>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE order_id = $1");
    let row = sqlx::query(&sql).bind(order_id).fetch_optional(db.pool()).await?;
    row.as_ref().map(Payment::from_row).transpose()
}

/// The row's `status`, which only this crate writes.
pub(super) fn status(row: &AnyRow) -> Result<PaymentStatus, StorageError> {
    let status: String = row.try_get("status")?;
    PaymentStatus::parse(&status).ok_or_else(|| {
        StorageError::Database(sqlx::Error::Decode(
            format!("unknown payment status {status:?}").into(),
        ))
    })
}
