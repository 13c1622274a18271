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
use crate::store::products::{self, StockMove};
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
    for (i, line) in lines.iter().enumerate() {
        if !products::apply(tx, StockMove::Hold, &line.sku, line.quantity).await? {
            for held in &lines[..i] {
                products::apply(tx, StockMove::Unhold, &held.sku, held.quantity).await?;
            }
            // An unknown product is the answer whatever others hold right now, so it is looked
            // for first, only now: a hold that succeeded found its product, and most do.
            for line in &lines {
                if products::find(&mut **tx, &line.sku).await?.is_none() {
                    let sku = line.sku.as_str().to_owned();
                    return refuse(tx, order_id, ReservationFailure::UnknownProduct, sku).await;
                }
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
        if !products::apply(tx, StockMove::Unhold, &line.sku, line.quantity).await? {
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
                    if !products::apply(tx, StockMove::SellHeld, &line.sku, line.quantity).await? {
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
        if !products::apply(tx, StockMove::Take, &line.sku, line.quantity).await? {
            for taken in &lines[..i] {
                products::apply(tx, StockMove::PutBack, &taken.sku, taken.quantity).await?;
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

#[cfg(test)]
mod tests {
    //! Stock totals under any sequence of the saga's commands, on a real (SQLite) database: the
    //! units live in conditional SQL updates, so that is where the totals are checked.

    use std::collections::BTreeMap;

    use mercato_storage::{DatabaseConfig, Db, SqliteSync, migrate};
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{Currency, Product, Quantity, Sku, price};
    use crate::store::{MIGRATIONS, reservations::Reservation};

    const SKUS: [&str; 3] = ["CAP-9", "MUG-001", "TEE-BLK-M"];
    const ORDERS: usize = 4;

    #[derive(Debug, Clone)]
    enum Step {
        Reserve { order: usize, lines: Vec<(usize, i64)> },
        Release(usize),
        Commit(usize),
        Expire(usize),
    }

    fn order_id(order: usize) -> String {
        format!("order-{order}")
    }

    fn lines() -> impl Strategy<Value = Vec<(usize, i64)>> {
        prop::collection::vec((0..SKUS.len(), 1_i64..=4), 1..4)
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let order = 0..ORDERS;
        let step = prop_oneof![
            3 => (order.clone(), lines()).prop_map(|(order, lines)| Step::Reserve { order, lines }),
            1 => order.clone().prop_map(Step::Release),
            1 => order.clone().prop_map(Step::Commit),
            1 => order.prop_map(Step::Expire),
        ];
        prop::collection::vec(step, 1..16)
    }

    /// A fresh database with the three products and `on_hand` units of each, none held.
    async fn shop(dir: &tempfile::TempDir, on_hand: [i64; 3]) -> Db {
        let config = DatabaseConfig {
            url: format!("sqlite://{}/inventory.db?mode=rwc", dir.path().display()),
            sqlite_synchronous: SqliteSync::Normal,
            ..DatabaseConfig::default()
        };
        let db = Db::connect(&config).await.unwrap();
        migrate(&db, "inventory", MIGRATIONS).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        for (sku, units) in SKUS.iter().zip(on_hand) {
            let product = Product {
                sku: Sku::parse(sku).unwrap(),
                name: (*sku).to_owned(),
                description: String::new(),
                price: price(100, Currency::EUR).unwrap(),
                on_hand: Quantity::new(units).unwrap(),
                reserved: Quantity::default(),
            };
            products::insert(&mut tx, &product).await.unwrap();
        }
        tx.commit().await.unwrap();
        db
    }

    /// (on_hand, reserved) per SKU.
    async fn stock(db: &Db) -> BTreeMap<String, (i64, i64)> {
        let mut stock = BTreeMap::new();
        for sku in SKUS {
            let product = products::find(db.pool(), &Sku::parse(sku).unwrap())
                .await
                .unwrap()
                .unwrap();
            stock.insert(
                sku.to_owned(),
                (product.on_hand.value(), product.reserved.value()),
            );
        }
        stock
    }

    async fn reservations(db: &Db) -> Vec<Reservation> {
        let mut conn = db.pool().acquire().await.unwrap();
        let mut found = Vec::new();
        for order in 0..ORDERS {
            if let Some(r) = store::find(&mut conn, &order_id(order)).await.unwrap() {
                found.push(r);
            }
        }
        found
    }

    /// Units per SKU over the reservations in `state`.
    fn units_in(reservations: &[Reservation], state: ReservationState) -> BTreeMap<String, i64> {
        let mut units = BTreeMap::new();
        for line in reservations
            .iter()
            .filter(|r| r.state == state)
            .flat_map(|r| &r.lines)
        {
            *units.entry(line.sku.as_str().to_owned()).or_insert(0) += line.quantity.value();
        }
        units
    }

    async fn apply(db: &Db, step: &Step) -> Option<Reserved> {
        let mut tx = db.begin().await.unwrap();
        let reserved = match step {
            Step::Reserve { order, lines } => {
                let id = order_id(*order);
                let reservation = NewReservation {
                    order_id: &id,
                    expires_at: i64::MAX / 2,
                    correlation_id: None,
                    traceparent: None,
                };
                let lines = lines.iter().map(|(sku, quantity)| (SKUS[*sku], *quantity));
                Some(reserve(&mut tx, &reservation, lines).await.unwrap())
            }
            Step::Release(order) => {
                release(&mut tx, &order_id(*order)).await.unwrap();
                None
            }
            Step::Commit(order) => {
                commit(&mut tx, &order_id(*order)).await.unwrap();
                None
            }
            Step::Expire(order) => {
                expire(&mut tx, &order_id(*order), i64::MAX).await.unwrap();
                None
            }
        };
        tx.commit().await.unwrap();
        reserved
    }

    /// Runs `body` against a fresh shop holding `on_hand` units of each product.
    fn in_shop(
        on_hand: [i64; 3],
        body: impl AsyncFnOnce(&Db) -> Result<(), TestCaseError>,
    ) -> Result<(), TestCaseError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let db = shop(&dir, on_hand).await;
            let outcome = body(&db).await;
            db.close().await;
            outcome
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn stock_is_conserved_and_never_oversold_whatever_the_commands(
            on_hand in [0_i64..6, 0_i64..6, 0_i64..6],
            steps in steps(),
        ) {
            in_shop(on_hand, async |db| {
                for step in &steps {
                    let before = stock(db).await;
                    let reserved = apply(db, step).await;
                    let after = stock(db).await;
                    let all = reservations(db).await;
                    let held = units_in(&all, ReservationState::Held);
                    let sold = units_in(&all, ReservationState::Committed);
                    for (i, sku) in SKUS.iter().enumerate() {
                        let (units, reserved_units) = after[*sku];
                        prop_assert!(0 <= reserved_units && reserved_units <= units, "{sku} after {step:?}: {after:?}");
                        prop_assert_eq!(reserved_units, held.get(*sku).copied().unwrap_or(0), "{} after {:?}", sku, step);
                        prop_assert_eq!(units + sold.get(*sku).copied().unwrap_or(0), on_hand[i], "{} after {:?}", sku, step);
                    }
                    // All or nothing: a reservation holds every line, or nothing moves.
                    match reserved {
                        Some(Reserved::Held(lines)) => {
                            for sku in SKUS {
                                let asked: i64 = lines.iter().filter(|l| l.sku.as_str() == sku).map(|l| l.quantity.value()).sum();
                                prop_assert_eq!(after[sku].1 - before[sku].1, asked, "{}", sku);
                            }
                        }
                        Some(Reserved::Refused { .. } | Reserved::Repeated) => prop_assert_eq!(&after, &before),
                        None => {}
                    }
                }
                Ok(())
            })?;
        }

        #[test]
        fn reserving_then_releasing_gives_back_exactly_what_was_available(
            on_hand in [0_i64..6, 0_i64..6, 0_i64..6],
            lines in lines(),
        ) {
            in_shop(on_hand, async |db| {
                let before = stock(db).await;
                apply(db, &Step::Reserve { order: 0, lines }).await;
                apply(db, &Step::Release(0)).await;
                prop_assert_eq!(stock(db).await, before);
                Ok(())
            })?;
        }
    }
}
