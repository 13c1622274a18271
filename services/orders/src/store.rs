//! Orders' SQL: the order read model, the card kept for the charge, and idempotency keys.

use mercato_contracts::money::{Currency, Money};
use mercato_contracts::orders::PricedLine;
use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{Migration, StorageError, Tx};

/// Orders' schema: its own tables, then the platform's outbox, inbox and event store, then the
/// times of the saga's steps in the read model, filled from the event store for rows already
/// there (so after it).
pub const MIGRATIONS: &[Migration] = &mercato_eventstore::with_platform_then(
    Migration::new(1, "orders", include_str!("../migrations/0001_orders.sql")),
    Migration::new(
        2,
        "order_timeline",
        concat!(
            include_str!("../migrations/0002_order_timeline.sql"),
            include_str!("../migrations/0002_order_timeline_backfill.sql")
        ),
    ),
);

/// Fills the times of the saga's steps in `order_views` from each order's stream (the first
/// event of each kind, as the timeline always showed), for the rows written before the read
/// model kept them; the last part of the migration that added them.
pub const TIMELINE_BACKFILL: &str = include_str!("../migrations/0002_order_timeline_backfill.sql");

/// The checkout funnel's events recorded since `$1` (unix ms): through the event store's index
/// by time ([`mercato_eventstore::BY_TIME`]), so the window costs what it holds, not the log.
pub const FUNNEL_EVENTS: &str = "SELECT event_type, recorded_at, envelope FROM events
    WHERE recorded_at >= $1 AND event_type IN ('OrderPlaced', 'OrderConfirmed', 'OrderCancelled')";

/// An order as the read model holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub order_id: String,
    pub customer_id: String,
    pub status: String,
    pub step: String,
    pub cancel_reason: Option<String>,
    pub lines: Vec<PricedLine>,
    pub total: Money,
    pub payment_status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub deadline_at: Option<i64>,
    pub version: i64,
    /// When the saga's steps happened (Unix milliseconds), each its first time.
    pub reserved_at: Option<i64>,
    pub paid_at: Option<i64>,
    pub confirmed_at: Option<i64>,
    pub cancelled_at: Option<i64>,
}

impl OrderView {
    /// The view of an order that has just been placed.
    #[must_use]
    pub fn pending(order: &crate::domain::Order, now: i64) -> Self {
        Self {
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            status: order.status.as_str().to_owned(),
            step: "reserving".into(),
            cancel_reason: None,
            lines: order.lines.iter().map(crate::events::line_out).collect(),
            total: order.total,
            payment_status: "none".into(),
            created_at: now,
            updated_at: now,
            deadline_at: None,
            version: order.version,
            reserved_at: None,
            paid_at: None,
            confirmed_at: None,
            cancelled_at: None,
        }
    }
}

const COLUMNS: &str = "order_id, customer_id, status, step, cancel_reason, lines, total_minor, currency, \
                       payment_status, created_at, updated_at, deadline_at, version, reserved_at, paid_at, \
                       confirmed_at, cancelled_at";

fn view_of(row: &mercato_storage::sqlx::any::AnyRow) -> Result<OrderView, StorageError> {
    let lines: String = row.get("lines");
    let order_id: String = row.get("order_id");
    let lines = serde_json::from_str(&lines)
        .map_err(|e| StorageError::Config(format!("order {order_id} holds malformed lines: {e}")))?;
    let currency = Currency::parse(&row.get::<String, _>("currency"))
        .map_err(|e| StorageError::Config(format!("order {order_id} holds a malformed currency: {e}")))?;
    Ok(OrderView {
        order_id,
        customer_id: row.get("customer_id"),
        status: row.get("status"),
        step: row.get("step"),
        cancel_reason: row.get("cancel_reason"),
        lines,
        total: Money::new(row.get("total_minor"), currency),
        payment_status: row.get("payment_status"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        deadline_at: row.get("deadline_at"),
        version: row.get("version"),
        reserved_at: row.get("reserved_at"),
        paid_at: row.get("paid_at"),
        confirmed_at: row.get("confirmed_at"),
        cancelled_at: row.get("cancelled_at"),
    })
}

/// # Errors
/// The database failed.
pub async fn view<'e, E>(executor: E, order_id: &str) -> Result<Option<OrderView>, StorageError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!("SELECT {COLUMNS} FROM order_views WHERE order_id = $1");
    let row = sqlx::query(&sql).bind(order_id).fetch_optional(executor).await?;
    row.as_ref().map(view_of).transpose()
}

/// The versions of the rows of `order_ids` that exist: what a batch of the projection can skip
/// without reading each row.
///
/// # Errors
/// The database failed.
pub async fn versions<'e, E>(
    executor: E,
    order_ids: &[&str],
) -> Result<std::collections::HashMap<String, i64>, StorageError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if order_ids.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let width = mercato_storage::in_list_width(order_ids.len());
    let sql = format!(
        "SELECT order_id, version FROM order_views WHERE order_id IN ({})",
        mercato_kit::store::placeholders(width)
    );
    let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
    for i in 0..width {
        query = query.bind(order_ids[i.min(order_ids.len() - 1)]);
    }
    Ok(query.fetch_all(executor).await?.into_iter().collect())
}

/// A customer's orders, newest first, after the cursor `(created_at, order_id)`.
///
/// # Errors
/// The database failed.
pub async fn customer_orders(
    pool: &sqlx::AnyPool,
    customer_id: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<OrderView>, StorageError> {
    let rows = match after {
        Some((created_at, order_id)) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM order_views WHERE customer_id = $1
                 AND (created_at < $2 OR (created_at = $2 AND order_id < $3))
                 ORDER BY created_at DESC, order_id DESC LIMIT $4"
            );
            sqlx::query(&sql)
                .bind(customer_id)
                .bind(created_at)
                .bind(order_id)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
        None => {
            let sql = format!(
                "SELECT {COLUMNS} FROM order_views WHERE customer_id = $1 ORDER BY created_at DESC, order_id DESC LIMIT $2"
            );
            sqlx::query(&sql)
                .bind(customer_id)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
    };
    rows.iter().map(view_of).collect()
}

/// When the timer may judge a step: its deadline passed, and, for a deadline that passed
/// before this process started, the step has also had its whole time again since the start.
#[derive(Debug, Clone, Copy)]
pub struct Overdue {
    pub now: i64,
    pub started_at: i64,
    /// `started_at` plus the reserve and the payment step's timeout.
    pub reserving_since_start: i64,
    pub charging_since_start: i64,
}

/// Pending orders whose saga step is overdue by `when`.
///
/// # Errors
/// The database failed.
pub async fn overdue(
    pool: &sqlx::AnyPool,
    when: Overdue,
    limit: i64,
) -> Result<Vec<(String, i64)>, StorageError> {
    let rows = sqlx::query(
        "SELECT order_id, version FROM order_views WHERE status = 'pending' AND deadline_at <= $1
           AND (deadline_at >= $2 OR (step = 'reserving' AND $1 >= $3) OR (step <> 'reserving' AND $1 >= $4))
         ORDER BY deadline_at LIMIT $5",
    )
    .bind(when.now)
    .bind(when.started_at)
    .bind(when.reserving_since_start)
    .bind(when.charging_since_start)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("order_id"), r.get("version")))
        .collect())
}

/// Writes the row unless the stored one is as new or newer.
///
/// # Errors
/// The database failed.
pub async fn upsert(tx: &mut Tx, v: &OrderView) -> Result<(), StorageError> {
    let lines = serde_json::to_string(&v.lines).map_err(|e| StorageError::Config(e.to_string()))?;
    sqlx::query(
        "INSERT INTO order_views (order_id, customer_id, status, step, cancel_reason, lines, total_minor, currency,
             payment_status, created_at, updated_at, deadline_at, version, reserved_at, paid_at, confirmed_at,
             cancelled_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         ON CONFLICT (order_id) DO UPDATE SET status = $3, step = $4, cancel_reason = $5, lines = $6,
             total_minor = $7, currency = $8, payment_status = $9, updated_at = $11, deadline_at = $12, version = $13,
             reserved_at = $14, paid_at = $15, confirmed_at = $16, cancelled_at = $17
         WHERE order_views.version < $13",
    )
    .bind(&v.order_id)
    .bind(&v.customer_id)
    .bind(&v.status)
    .bind(&v.step)
    .bind(&v.cancel_reason)
    .bind(lines)
    .bind(v.total.amount_minor)
    .bind(v.total.currency.as_str())
    .bind(&v.payment_status)
    .bind(v.created_at)
    .bind(v.updated_at)
    .bind(v.deadline_at)
    .bind(v.version)
    .bind(v.reserved_at)
    .bind(v.paid_at)
    .bind(v.confirmed_at)
    .bind(v.cancelled_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Empties the read model, for a rebuild.
///
/// # Errors
/// The database failed.
pub async fn clear(tx: &mut Tx) -> Result<(), StorageError> {
    sqlx::query("DELETE FROM order_views").execute(&mut **tx).await?;
    Ok(())
}

/// # Errors
/// The database failed.
pub async fn save_card(tx: &mut Tx, order_id: &str, card_token: &str) -> Result<(), StorageError> {
    sqlx::query("INSERT INTO order_payment_methods (order_id, card_token) VALUES ($1, $2)")
        .bind(order_id)
        .bind(card_token)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// # Errors
/// The database failed.
pub async fn card(tx: &mut Tx, order_id: &str) -> Result<Option<String>, StorageError> {
    let row = sqlx::query("SELECT card_token FROM order_payment_methods WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|r| r.get("card_token")))
}

/// The order an idempotency key already made, with the hash of the request that made it.
///
/// # Errors
/// The database failed.
pub async fn idempotent_order(
    pool: &sqlx::AnyPool,
    customer_id: &str,
    key: &str,
) -> Result<Option<(String, String)>, StorageError> {
    let row = sqlx::query(
        "SELECT order_id, request_hash FROM order_idempotency WHERE customer_id = $1 AND idempotency_key = $2",
    )
    .bind(customer_id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.get("order_id"), r.get("request_hash"))))
}

/// Records the key; a concurrent request with the same key makes this a conflict.
///
/// # Errors
/// [`StorageError::Conflict`] when the key is taken.
pub async fn save_idempotency(
    tx: &mut Tx,
    customer_id: &str,
    key: &str,
    hash: &str,
    order_id: &str,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO order_idempotency (customer_id, idempotency_key, request_hash, order_id, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(customer_id)
    .bind(key)
    .bind(hash)
    .bind(order_id)
    .bind(mercato_storage::now_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
