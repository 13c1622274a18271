//! The log of provider calls: one row per charge or refund attempt, written in the transaction
//! that records the call's answer under the lease, so the log and the payment never disagree.

use mercato_storage::sqlx;
use mercato_storage::{Db, StorageError, Tx};

use super::leases::Claim;
use crate::domain::PaymentStatus;

/// How one provider call went, as the worker saw it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Unix ms when the call was sent.
    pub started_at: i64,
    pub duration_ms: i64,
    /// `succeeded`, the provider error's kind (`declined`, `timeout`, …), or `interrupted`.
    pub outcome: &'a str,
    /// The charge's or refund's id at the provider, when it answered with one.
    pub provider_id: Option<&'a str>,
    pub error: Option<&'a str>,
}

mercato_kit::row_struct! {
    /// One logged provider call.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Attempt {
        /// `charge` or `refund`.
        pub step: String,
        /// 1-based within its step, as the payment's `attempts` counted it.
        pub attempt: i64,
        pub started_at: i64,
        pub duration_ms: i64,
        pub outcome: String,
        pub provider_id: Option<String>,
        pub error: Option<String>,
    }
}

fn step_of(status: PaymentStatus) -> &'static str {
    if status == PaymentStatus::RefundPending {
        "refund"
    } else {
        "charge"
    }
}

/// Logs the claimed call. Only the lease's holder records an attempt number, after its fenced
/// write matched; a duplicate is ignored rather than failing the answer it goes with.
///
/// # Errors
/// The database failed.
pub async fn record_attempt(tx: &mut Tx, claim: &Claim, call: &Call<'_>) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO payment_attempts
             (order_id, step, attempt, started_at, duration_ms, outcome, provider_id, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (order_id, step, attempt) DO NOTHING",
    )
    .bind(&claim.payment.order_id)
    .bind(step_of(claim.payment.status))
    .bind(claim.payment.attempts)
    .bind(call.started_at)
    .bind(call.duration_ms)
    .bind(call.outcome)
    .bind(call.provider_id)
    .bind(call.error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The order's provider calls in the order they were made: the charge's, then the refund's.
///
/// # Errors
/// The database failed.
pub async fn attempts(db: &Db, order_id: &str) -> Result<Vec<Attempt>, StorageError> {
    let rows = sqlx::query(
        "SELECT step, attempt, started_at, duration_ms, outcome, provider_id, error
         FROM payment_attempts WHERE order_id = $1 ORDER BY started_at, attempt",
    )
    .bind(order_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(Attempt::from_row).collect()
}
