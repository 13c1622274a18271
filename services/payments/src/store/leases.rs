//! The worker's side of a payment: finding due rows, claiming one under a lease for a provider
//! call, and recording the call's outcome; every write after the claim is fenced by the lease.

use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Db, StorageError, Tx};

use super::attempts::{Call, record_attempt};
use super::payments::{COLUMNS, Payment};
use crate::domain::PaymentStatus;

/// A row the worker holds: the payment as claimed, and the lease that fences later writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub payment: Payment,
    pub lease_until: i64,
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `sql`, a write to the claimed row, with `$1` to `$3` bound to the lease: the order, the
/// status the row must still have, and the lease's end. Only the lease's holder matches them.
fn fenced<'q>(sql: &'q str, claim: &'q Claim, status: PaymentStatus) -> Query<'q> {
    sqlx::query(sql)
        .bind(&claim.payment.order_id)
        .bind(status.as_str())
        .bind(claim.lease_until)
}

/// Runs a [`fenced`] write; `false` when it changed nothing, the lease lost.
async fn write_fenced(tx: &mut Tx, write: Query<'_>) -> Result<bool, StorageError> {
    Ok(write.execute(&mut **tx).await?.rows_affected() == 1)
}

/// [`write_fenced`] in a transaction of its own, with the provider call it follows logged when
/// the write matched.
async fn write_fenced_alone(
    db: &Db,
    write: Query<'_>,
    claim: &Claim,
    call: Option<&Call<'_>>,
) -> Result<bool, StorageError> {
    let mut tx = db.begin().await?;
    let changed = write_fenced(&mut tx, write).await?;
    if let (true, Some(call)) = (changed, call) {
        record_attempt(&mut tx, claim, call).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// Payments the worker should look at now, the longest waiting first.
///
/// # Errors
/// The database failed.
pub async fn due(db: &Db, now: i64, limit: usize) -> Result<Vec<(String, PaymentStatus)>, StorageError> {
    let rows = sqlx::query(
        "SELECT order_id, status FROM payments
         WHERE status IN ('pending', 'refund_pending') AND next_attempt_at <= $1
         ORDER BY next_attempt_at LIMIT $2",
    )
    .bind(now)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .filter_map(|row| {
            let order_id: Result<String, _> = row.try_get("order_id");
            let status: Result<String, _> = row.try_get("status");
            match (order_id, status) {
                (Ok(id), Ok(s)) => PaymentStatus::parse(&s).map(|s| Ok((id, s))),
                (Err(e), _) | (_, Err(e)) => Some(Err(e.into())),
            }
        })
        .collect()
}

/// Takes each `due` row for one provider call if it is still due in its status: pushes
/// `next_attempt_at` to `lease_until` and counts the attempt. All in one transaction, so a pass
/// that finds many due rows commits once. A row another worker (or a state change) got to
/// first is left out.
///
/// # Errors
/// The database failed: nothing was claimed.
pub async fn claim(
    db: &Db,
    due: &[(String, PaymentStatus)],
    now: i64,
    lease_until: i64,
) -> Result<Vec<Claim>, StorageError> {
    let sql = format!(
        "UPDATE payments SET next_attempt_at = $4, attempts = attempts + 1
         WHERE order_id = $1 AND status = $2 AND next_attempt_at <= $3
         RETURNING {COLUMNS}"
    );
    let mut claims = Vec::with_capacity(due.len());
    let mut tx = db.begin().await?;
    for (order_id, status) in due {
        let row = sqlx::query(&sql)
            .bind(order_id)
            .bind(status.as_str())
            .bind(now)
            .bind(lease_until)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            claims.push(Claim {
                payment: Payment::from_row(&row)?,
                lease_until,
            });
        }
    }
    tx.commit().await?;
    Ok(claims)
}

/// Records the capture; the payment goes to `refund_pending` instead when a refund was asked
/// for meanwhile. `None` when the lease was lost.
///
/// # Errors
/// The database failed.
pub async fn capture(
    tx: &mut Tx,
    claim: &Claim,
    charge_id: &str,
    now: i64,
) -> Result<Option<Payment>, StorageError> {
    let sql = format!(
        "UPDATE payments SET
             status = CASE WHEN refund_requested = 1 THEN 'refund_pending' ELSE 'captured' END,
             attempts = CASE WHEN refund_requested = 1 THEN 0 ELSE attempts END,
             provider_charge_id = $4, next_attempt_at = $5, last_error = NULL, updated_at = $5
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3
         RETURNING {COLUMNS}"
    );
    let row = fenced(&sql, claim, PaymentStatus::Pending)
        .bind(charge_id)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(Payment::from_row).transpose()
}

/// Records that the charge failed for good. `false` when the lease was lost.
///
/// # Errors
/// The database failed.
pub async fn fail(tx: &mut Tx, claim: &Claim, error: &str, now: i64) -> Result<bool, StorageError> {
    let write = fenced(
        "UPDATE payments SET status = 'failed', last_error = $4, next_attempt_at = $5, updated_at = $5
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
        claim,
        PaymentStatus::Pending,
    )
    .bind(error)
    .bind(now);
    write_fenced(tx, write).await
}

/// Tells the saga the charge failed while its outcome is still unknown: the row stays pending
/// (the worker keeps asking the provider with the same key) and is due again at `next_at`.
/// `false` when the lease was lost.
///
/// # Errors
/// The database failed.
pub async fn report_unknown(
    tx: &mut Tx,
    claim: &Claim,
    error: &str,
    now: i64,
    next_at: i64,
) -> Result<bool, StorageError> {
    let write = fenced(
        "UPDATE payments SET failure_reported = 1, last_error = $4, next_attempt_at = $5, updated_at = $6
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
        claim,
        PaymentStatus::Pending,
    )
    .bind(error)
    .bind(next_at)
    .bind(now);
    write_fenced(tx, write).await
}

/// Records the refund. `false` when the lease was lost.
///
/// # Errors
/// The database failed.
pub async fn refunded(tx: &mut Tx, claim: &Claim, refund_id: &str, now: i64) -> Result<bool, StorageError> {
    let write = fenced(
        "UPDATE payments SET status = 'refunded', provider_refund_id = $4, last_error = NULL,
             next_attempt_at = $5, updated_at = $5
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
        claim,
        PaymentStatus::RefundPending,
    )
    .bind(refund_id)
    .bind(now);
    write_fenced(tx, write).await
}

/// Schedules the next provider call of the claimed step at `at`, logging `call` (the one that
/// failed, if one was made). `false` when the lease was lost.
///
/// # Errors
/// The database failed.
pub async fn retry_at(
    db: &Db,
    claim: &Claim,
    at: i64,
    error: &str,
    call: Option<&Call<'_>>,
) -> Result<bool, StorageError> {
    let write = fenced(
        "UPDATE payments SET next_attempt_at = $4, last_error = $5
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
        claim,
        claim.payment.status,
    )
    .bind(at)
    .bind(error);
    write_fenced_alone(db, write, claim, call).await
}

/// Gives a claimed row back for a call that was never sent (the provider's breaker or bulkhead
/// refused it): the attempt does not count, and the row is due again at `at`.
///
/// # Errors
/// The database failed.
pub async fn put_back_unsent(db: &Db, claim: &Claim, at: i64) -> Result<bool, StorageError> {
    let write = fenced(
        "UPDATE payments SET next_attempt_at = $4, attempts = attempts - 1
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
        claim,
        claim.payment.status,
    )
    .bind(at);
    write_fenced_alone(db, write, claim, None).await
}

/// Gives a claimed row back, due at `now` (shutdown interrupted the call). The attempt still
/// counts: the provider may have received it, and a refund request must then not take the
/// payment for one the provider never saw. `call` logs it as interrupted.
///
/// # Errors
/// The database failed.
pub async fn release(db: &Db, claim: &Claim, now: i64, call: &Call<'_>) -> Result<bool, StorageError> {
    let write = fenced(
        "UPDATE payments SET next_attempt_at = $4
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
        claim,
        claim.payment.status,
    )
    .bind(now);
    write_fenced_alone(db, write, claim, Some(call)).await
}
