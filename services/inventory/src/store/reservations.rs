//! The `reservations` and `reservation_lines` tables. A reservation changes state only through
//! [`transition`], a conditional `UPDATE` on the state it expects: two replicas (or a command and
//! the expiry sweeper) racing for one reservation cannot both win.

use mercato_storage::sqlx::any::AnyRow;
use mercato_storage::sqlx::{self, Any, AnyConnection, Row as _};
use mercato_storage::{StorageError, Tx, now_millis};

use super::corrupt;
use crate::domain::{Quantity, ReservationLine, ReservationState, Sku};

/// A reservation about to be stored.
#[derive(Debug, Clone, Copy)]
pub struct NewReservation<'a> {
    pub order_id: &'a str,
    /// Unix milliseconds.
    pub expires_at: i64,
    /// Kept so that what the sweeper later publishes joins the order's trace.
    pub correlation_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
}

/// A stored reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: String,
    pub state: ReservationState,
    pub expires_at: i64,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
    pub lines: Vec<ReservationLine>,
}

/// Records the order's reservation as held, unless the order has one already; true when this
/// call created it. Run first, it makes a repeated `ReserveStock` a no-op: on PostgreSQL a
/// concurrent duplicate waits on the key and then finds the row.
///
/// # Errors
/// The database failed.
pub async fn claim(tx: &mut Tx, reservation: &NewReservation<'_>) -> Result<bool, StorageError> {
    let now = now_millis();
    let done = sqlx::query(
        "INSERT INTO reservations (order_id, state, expires_at, correlation_id, traceparent, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(reservation.order_id)
    .bind(ReservationState::Held.as_str())
    .bind(reservation.expires_at)
    .bind(reservation.correlation_id)
    .bind(reservation.traceparent)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// # Errors
/// The database failed.
pub async fn add_line(tx: &mut Tx, order_id: &str, line: &ReservationLine) -> Result<(), StorageError> {
    sqlx::query("INSERT INTO reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)")
        .bind(order_id)
        .bind(line.sku.as_str())
        .bind(line.quantity.value())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves the reservation from `from` to `to`; false when it is not in `from` (any more).
///
/// # Errors
/// The database failed.
pub async fn transition(
    tx: &mut Tx,
    order_id: &str,
    from: ReservationState,
    to: ReservationState,
) -> Result<bool, StorageError> {
    let done =
        sqlx::query("UPDATE reservations SET state = $1, updated_at = $2 WHERE order_id = $3 AND state = $4")
            .bind(to.as_str())
            .bind(now_millis())
            .bind(order_id)
            .bind(from.as_str())
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a held reservation whose time has run out as expired; false when it is not held or
/// not yet due (another replica's sweeper, or a command, got there first).
///
/// # Errors
/// The database failed.
pub async fn expire(tx: &mut Tx, order_id: &str, now: i64) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "UPDATE reservations SET state = $1, updated_at = $2
         WHERE order_id = $3 AND state = $4 AND expires_at <= $2",
    )
    .bind(ReservationState::Expired.as_str())
    .bind(now)
    .bind(order_id)
    .bind(ReservationState::Held.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The order's reservation with its lines.
///
/// # Errors
/// The database failed or holds a malformed row.
pub async fn find(conn: &mut AnyConnection, order_id: &str) -> Result<Option<Reservation>, StorageError> {
    // The reservation and its lines in one round trip: a row per line (one with no line for a
    // reservation without lines), in SKU order.
    let rows = sqlx::query(
        "SELECT r.order_id, r.state, r.expires_at, r.correlation_id, r.traceparent, l.sku, l.quantity
         FROM reservations r LEFT JOIN reservation_lines l ON l.order_id = r.order_id
         WHERE r.order_id = $1 ORDER BY l.sku",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let state: String = row.try_get("state")?;
    let state = ReservationState::parse(&state).map_err(|e| corrupt("reservations", order_id, e))?;
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<String>, _>("sku")?.is_some() {
            lines.push(line_of(row, order_id)?);
        }
    }
    Ok(Some(Reservation {
        order_id: row.try_get("order_id")?,
        state,
        expires_at: row.try_get("expires_at")?,
        correlation_id: row.try_get("correlation_id")?,
        traceparent: row.try_get("traceparent")?,
        lines,
    }))
}

/// The lines of the order's reservation, in SKU order.
///
/// # Errors
/// The database failed or holds a malformed row.
pub async fn lines<'e, E>(executor: E, order_id: &str) -> Result<Vec<ReservationLine>, StorageError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let rows = sqlx::query("SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku")
        .bind(order_id)
        .fetch_all(executor)
        .await?;
    rows.iter().map(|row| line_of(row, order_id)).collect()
}

/// A reservation line from a row's `sku` and `quantity`.
fn line_of(row: &AnyRow, order_id: &str) -> Result<ReservationLine, StorageError> {
    let bad = |e: &dyn std::fmt::Display| corrupt("reservation_lines", order_id, e);
    Ok(ReservationLine {
        sku: Sku::parse(&row.try_get::<String, _>("sku")?).map_err(|e| bad(&e))?,
        quantity: Quantity::positive(row.try_get("quantity")?).map_err(|e| bad(&e))?,
    })
}

/// Up to `limit` held reservations whose time ran out by `now`, the oldest first.
///
/// # Errors
/// The database failed.
pub async fn due<'e, E>(executor: E, now: i64, limit: usize) -> Result<Vec<String>, StorageError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let rows = sqlx::query(
        "SELECT order_id FROM reservations WHERE state = $1 AND expires_at <= $2
         ORDER BY expires_at LIMIT $3",
    )
    .bind(ReservationState::Held.as_str())
    .bind(now)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(executor)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("order_id")?)).collect()
}
