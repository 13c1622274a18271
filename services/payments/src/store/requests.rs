//! What the saga's commands record: a charge to make (once per order and idempotency key) and a
//! refund asked for, whatever state the payment is in, or before it exists.

use mercato_messaging::Envelope;
use mercato_storage::sqlx;
use mercato_storage::{StorageError, Tx};

use super::payments::status;
use crate::domain::{ChargeIntent, PaymentStatus};

/// Records a charge to make, due at once; `false` when the order has a payment already.
///
/// # Errors
/// [`StorageError::Conflict`] when another order already uses the idempotency key.
pub async fn record_charge(
    tx: &mut Tx,
    intent: &ChargeIntent,
    command: &Envelope,
    now: i64,
) -> Result<bool, StorageError> {
    let inserted = sqlx::query(
        "INSERT INTO payments (order_id, payment_id, customer_id, idempotency_key, amount_minor,
             currency, card_token, status, attempts, next_attempt_at, refund_requested,
             correlation_id, traceparent, charge_command_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, 0, $9, $10, $11, $8, $8)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&intent.order_id)
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&intent.customer_id)
    .bind(&intent.idempotency_key)
    .bind(intent.amount.minor())
    .bind(intent.amount.currency())
    .bind(&intent.card_token)
    .bind(now)
    .bind(command.correlation_id.as_deref())
    .bind(command.traceparent.as_deref())
    .bind(&command.id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Marks the order's payment for refund and returns its status afterwards: a captured payment
/// becomes `refund_pending` (due at once); a pending one the provider never saw fails quietly;
/// a pending one already sent is refunded as soon as it captures. An order with no payment gets
/// a `failed` marker, so a charge command that arrives later (out of order) is a no-op too.
///
/// # Errors
/// The database failed.
pub async fn request_refund(
    tx: &mut Tx,
    order_id: &str,
    command: &Envelope,
    now: i64,
) -> Result<PaymentStatus, StorageError> {
    let row = sqlx::query(
        "UPDATE payments SET
             refund_requested = 1,
             refund_command_id = COALESCE(refund_command_id, $2),
             status = CASE WHEN status = 'captured' THEN 'refund_pending'
                           WHEN status = 'pending' AND attempts = 0 THEN 'failed'
                           ELSE status END,
             last_error = CASE WHEN status = 'pending' AND attempts = 0
                               THEN 'refund requested before the provider was asked to charge'
                               ELSE last_error END,
             attempts = CASE WHEN status = 'captured' THEN 0 ELSE attempts END,
             next_attempt_at = CASE WHEN status = 'captured' THEN $3 ELSE next_attempt_at END,
             updated_at = $3
         WHERE order_id = $1
         RETURNING status",
    )
    .bind(order_id)
    .bind(&command.id)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = row {
        return status(&row);
    }
    sqlx::query(
        "INSERT INTO payments (order_id, payment_id, customer_id, idempotency_key, amount_minor,
             currency, card_token, status, attempts, next_attempt_at, refund_requested, last_error,
             correlation_id, traceparent, refund_command_id, created_at, updated_at)
         VALUES ($1, $2, '', $3, 0, '', '', 'failed', 0, $4, 1,
             'refund requested before any charge', $5, $6, $7, $4, $4)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(format!("refund-before-charge:{order_id}"))
    .bind(now)
    .bind(command.correlation_id.as_deref())
    .bind(command.traceparent.as_deref())
    .bind(&command.id)
    .execute(&mut **tx)
    .await?;
    Ok(PaymentStatus::Failed)
}
