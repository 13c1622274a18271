//! The stock side of the checkout saga: hold an order's lines all or nothing, release them,
//! sell them, or let them expire. Each function works inside the caller's transaction (the
//! inbox's, or the sweeper's), which also carries the event it answers with.
//!
//! Every change starts with a conditional move of the reservation's state (see
//! [`crate::store::reservations::transition`]) and only then touches stock, so of two racers only the
//! one that moved the state changes any units.

use mercato_contracts::inventory::ReservationFailure;
use mercato_storage::{StorageError, Tx};

use crate::domain::{
    CommitAction, InvalidLines, ReleaseAction, ReservationLine, ReservationState, requested_lines,
};
use crate::store::products;
use crate::store::reservations::{self as store, NewReservation};

/// Why a `ReserveStock` could not be acted on at all.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// The command breaks the contract (no lines, a quantity below one); no answer can fix it.
    #[error("malformed reservation for order {order_id}: {reason}")]
    Malformed { order_id: String, reason: InvalidLines },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a `ReserveStock` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Every line is held.
    Held(Vec<ReservationLine>),
    /// Nothing is held; `sku` is the first line that could not be served.
    Refused { reason: ReservationFailure, sku: String },
    /// The order has a reservation already: nothing changed.
    Repeated,
}

/// Holds every line for the order, or none.
///
/// # Errors
/// [`ReserveError::Malformed`] before anything is written; the database failed.
pub async fn reserve<'a>(
    tx: &mut Tx,
    reservation: &NewReservation<'_>,
    lines: impl IntoIterator<Item = (&'a str, i64)>,
) -> Result<Reserved, ReserveError> {
    let order_id = reservation.order_id;
    let lines = match requested_lines(lines) {
        Ok(lines) => Ok(lines),
        Err(InvalidLines::UnknownSku(raw)) => Err(raw),
        Err(reason) => {
            return Err(ReserveError::Malformed {
                order_id: order_id.to_owned(),
                reason,
            });
        }
    };
    if !store::claim(tx, reservation).await? {
        return Ok(Reserved::Repeated);
    }
    let lines = match lines {
        Ok(lines) => lines,
        Err(raw) => return refuse(tx, order_id, ReservationFailure::UnknownProduct, raw).await,
    };
    for line in &lines {
        store::add_line(tx, order_id, line).await?;
    }
    // Unknown products first: that answer does not depend on what others hold right now.
    for line in &lines {
        if products::find(&mut **tx, &line.sku).await?.is_none() {
            let sku = line.sku.as_str().to_owned();
            return refuse(tx, order_id, ReservationFailure::UnknownProduct, sku).await;
        }
    }
    for (i, line) in lines.iter().enumerate() {
        if !products::hold(tx, &line.sku, line.quantity).await? {
            for held in &lines[..i] {
                products::unhold(tx, &held.sku, held.quantity).await?;
            }
            let sku = line.sku.as_str().to_owned();
            return refuse(tx, order_id, ReservationFailure::OutOfStock, sku).await;
        }
    }
    Ok(Reserved::Held(lines))
}

async fn refuse(
    tx: &mut Tx,
    order_id: &str,
    reason: ReservationFailure,
    sku: String,
) -> Result<Reserved, ReserveError> {
    store::transition(tx, order_id, ReservationState::Held, ReservationState::Failed).await?;
    Ok(Reserved::Refused { reason, sku })
}

/// Gives back what the order holds; false when nothing was held (never reserved, released
/// already, expired, sold, or failed).
///
/// # Errors
/// The database failed.
pub async fn release(tx: &mut Tx, order_id: &str) -> Result<bool, StorageError> {
    let Some(reservation) = store::find(tx, order_id).await? else {
        return Ok(false);
    };
    if reservation.state.on_release() == ReleaseAction::Nothing
        || !store::transition(tx, order_id, ReservationState::Held, ReservationState::Released).await?
    {
        return Ok(false);
    }
    unhold_all(tx, order_id, &reservation.lines).await?;
    Ok(true)
}

/// Gives back the order's units when its time has run out by `now`; false when it is not (or
/// no longer) a held, due reservation.
///
/// # Errors
/// The database failed.
pub async fn expire(tx: &mut Tx, order_id: &str, now: i64) -> Result<bool, StorageError> {
    if !store::expire(tx, order_id, now).await? {
        return Ok(false);
    }
    let lines = store::lines(&mut **tx, order_id).await?;
    unhold_all(tx, order_id, &lines).await?;
    Ok(true)
}

async fn unhold_all(tx: &mut Tx, order_id: &str, lines: &[ReservationLine]) -> Result<(), StorageError> {
    for line in lines {
        if !products::unhold(tx, &line.sku, line.quantity).await? {
            tracing::error!(order_id, sku = %line.sku, quantity = line.quantity.value(),
                "fewer units held than the reservation says; stock counts need checking");
        }
    }
    Ok(())
}

/// What a `CommitReservation` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The units are sold.
    Sold,
    /// They were sold already: nothing changed.
    Repeated,
    /// The hold had expired and `sku` is no longer available: nothing is sold.
    OutOfStock { sku: String },
    /// There is nothing to commit: no reservation, or one released or failed.
    NotHeld(Option<ReservationState>),
}

/// Sells what the order holds; an expired hold is taken again if the units are still free.
///
/// # Errors
/// The database failed.
pub async fn commit(tx: &mut Tx, order_id: &str) -> Result<Committed, StorageError> {
    // A lost race for the state (the sweeper expired it meanwhile) is decided again on the new
    // state; the states only move forward, so this ends.
    loop {
        let Some(reservation) = store::find(tx, order_id).await? else {
            return Ok(Committed::NotHeld(None));
        };
        let state = reservation.state;
        match state.on_commit() {
            CommitAction::AlreadySold => return Ok(Committed::Repeated),
            CommitAction::Refuse => return Ok(Committed::NotHeld(Some(state))),
            CommitAction::Sell => {
                if !store::transition(tx, order_id, state, ReservationState::Committed).await? {
                    continue;
                }
                for line in &reservation.lines {
                    if !products::sell_held(tx, &line.sku, line.quantity).await? {
                        tracing::error!(order_id, sku = %line.sku, quantity = line.quantity.value(),
                            "fewer units held than the reservation says; stock counts need checking");
                    }
                }
                return Ok(Committed::Sold);
            }
            CommitAction::Retake => {
                if !store::transition(tx, order_id, state, ReservationState::Committed).await? {
                    continue;
                }
                return retake(tx, order_id, &reservation.lines).await;
            }
        }
    }
}

/// Sells an expired reservation's lines from what is available now, all or nothing.
async fn retake(tx: &mut Tx, order_id: &str, lines: &[ReservationLine]) -> Result<Committed, StorageError> {
    for (i, line) in lines.iter().enumerate() {
        if !products::take(tx, &line.sku, line.quantity).await? {
            for taken in &lines[..i] {
                products::put_back(tx, &taken.sku, taken.quantity).await?;
            }
            store::transition(
                tx,
                order_id,
                ReservationState::Committed,
                ReservationState::Failed,
            )
            .await?;
            return Ok(Committed::OutOfStock {
                sku: line.sku.as_str().to_owned(),
            });
        }
    }
    Ok(Committed::Sold)
}
