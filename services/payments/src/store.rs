//! Payments' SQL: one row per order, written once for SQLite and PostgreSQL.
//!
//! The worker owns a row while it talks to the provider through a lease: claiming sets
//! `next_attempt_at` into the future where the row is due, and every write after the call is
//! conditional on that same value, so a replica whose lease ran out (and was taken over) can
//! never overwrite the newer owner's result.

use mercato_messaging::Envelope;
use mercato_storage::sqlx::any::AnyRow;
use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Db, Migration, StorageError, Tx};

use crate::domain::{ChargeIntent, PaymentStatus};

/// Payments' schema: its table, then the platform's outbox and inbox.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "payments",
        sql: include_str!("../migrations/0001_payments.sql"),
        postgres_sql: None,
    },
    Migration {
        version: 2,
        name: "unknown_outcomes",
        sql: include_str!("../migrations/0002_unknown_outcomes.sql"),
        postgres_sql: None,
    },
    mercato_messaging::outbox::MIGRATION,
    mercato_messaging::inbox::MIGRATION,
];

const COLUMNS: &str = "order_id, payment_id, customer_id, idempotency_key, amount_minor, currency, \
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
    fn from_row(row: &AnyRow) -> Result<Self, StorageError> {
        let status: String = row.try_get("status")?;
        let status = PaymentStatus::parse(&status).ok_or_else(|| {
            StorageError::Database(sqlx::Error::Decode(
                format!("unknown payment status {status:?}").into(),
            ))
        })?;
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

/// A row the worker holds: the payment as claimed, and the lease that fences later writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub payment: Payment,
    pub lease_until: i64,
}

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
        let status: String = row.try_get("status")?;
        return PaymentStatus::parse(&status).ok_or_else(|| {
            StorageError::Database(sqlx::Error::Decode(
                format!("unknown payment status {status:?}").into(),
            ))
        });
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

/// The order's payment.
///
/// # Errors
/// The database failed.
pub async fn find(db: &Db, order_id: &str) -> Result<Option<Payment>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE order_id = $1");
    let row = sqlx::query(&sql).bind(order_id).fetch_optional(db.pool()).await?;
    row.as_ref().map(Payment::from_row).transpose()
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

/// Takes the row for one provider call if it is still due in `status`: pushes
/// `next_attempt_at` to `lease_until` and counts the attempt. `None` when another worker (or a
/// state change) got there first.
///
/// # Errors
/// The database failed.
pub async fn claim(
    db: &Db,
    order_id: &str,
    status: PaymentStatus,
    now: i64,
    lease_until: i64,
) -> Result<Option<Claim>, StorageError> {
    let sql = format!(
        "UPDATE payments SET next_attempt_at = $4, attempts = attempts + 1
         WHERE order_id = $1 AND status = $2 AND next_attempt_at <= $3
         RETURNING {COLUMNS}"
    );
    let mut tx = db.begin().await?;
    let row = sqlx::query(&sql)
        .bind(order_id)
        .bind(status.as_str())
        .bind(now)
        .bind(lease_until)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    row.as_ref()
        .map(|row| {
            Ok(Claim {
                payment: Payment::from_row(row)?,
                lease_until,
            })
        })
        .transpose()
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
    let row = sqlx::query(&sql)
        .bind(&claim.payment.order_id)
        .bind(PaymentStatus::Pending.as_str())
        .bind(claim.lease_until)
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
    let changed = sqlx::query(
        "UPDATE payments SET status = 'failed', last_error = $4, next_attempt_at = $5, updated_at = $5
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
    )
    .bind(&claim.payment.order_id)
    .bind(PaymentStatus::Pending.as_str())
    .bind(claim.lease_until)
    .bind(error)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
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
    let changed = sqlx::query(
        "UPDATE payments SET failure_reported = 1, last_error = $4, next_attempt_at = $5, updated_at = $6
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
    )
    .bind(&claim.payment.order_id)
    .bind(PaymentStatus::Pending.as_str())
    .bind(claim.lease_until)
    .bind(error)
    .bind(next_at)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Records the refund. `false` when the lease was lost.
///
/// # Errors
/// The database failed.
pub async fn refunded(tx: &mut Tx, claim: &Claim, refund_id: &str, now: i64) -> Result<bool, StorageError> {
    let changed = sqlx::query(
        "UPDATE payments SET status = 'refunded', provider_refund_id = $4, last_error = NULL,
             next_attempt_at = $5, updated_at = $5
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
    )
    .bind(&claim.payment.order_id)
    .bind(PaymentStatus::RefundPending.as_str())
    .bind(claim.lease_until)
    .bind(refund_id)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Schedules the next provider call of the claimed step at `at`. `false` when the lease was lost.
///
/// # Errors
/// The database failed.
pub async fn retry_at(db: &Db, claim: &Claim, at: i64, error: &str) -> Result<bool, StorageError> {
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE payments SET next_attempt_at = $4, last_error = $5
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
    )
    .bind(&claim.payment.order_id)
    .bind(claim.payment.status.as_str())
    .bind(claim.lease_until)
    .bind(at)
    .bind(error)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(changed == 1)
}

/// Gives a claimed row back for a call that was never sent (the provider's breaker or bulkhead
/// refused it): the attempt does not count, and the row is due again at `at`.
///
/// # Errors
/// The database failed.
pub async fn put_back_unsent(db: &Db, claim: &Claim, at: i64) -> Result<bool, StorageError> {
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE payments SET next_attempt_at = $4, attempts = attempts - 1
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
    )
    .bind(&claim.payment.order_id)
    .bind(claim.payment.status.as_str())
    .bind(claim.lease_until)
    .bind(at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(changed == 1)
}

/// Gives a claimed row back, due at `now` (shutdown interrupted the call). The attempt still
/// counts: the provider may have received it, and a refund request must then not take the
/// payment for one the provider never saw.
///
/// # Errors
/// The database failed.
pub async fn release(db: &Db, claim: &Claim, now: i64) -> Result<bool, StorageError> {
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE payments SET next_attempt_at = $4
         WHERE order_id = $1 AND status = $2 AND next_attempt_at = $3",
    )
    .bind(&claim.payment.order_id)
    .bind(claim.payment.status.as_str())
    .bind(claim.lease_until)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(changed == 1)
}
