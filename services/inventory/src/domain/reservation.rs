//! Reservations: what an order holds, and what each command does in each state.

use std::collections::BTreeMap;

use super::quantity::{InvalidQuantity, Quantity};
use super::sku::Sku;

/// Where a reservation is in its life. Only `Held` keeps stock out of `available`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationState {
    /// Units are held until the reservation is committed, released or expires.
    Held,
    /// The held units were sold.
    Committed,
    /// The order gave the units back.
    Released,
    /// Nobody committed or released in time; the units went back on their own.
    Expired,
    /// Nothing was held: a line could not be served.
    Failed,
}

/// A stored state this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reservation state {0:?}")]
pub struct UnknownState(pub String);

/// What `CommitReservation` does to a reservation in some state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitAction {
    /// Sell the held units.
    Sell,
    /// Sold already: a repeated command changes nothing.
    AlreadySold,
    /// The hold ran out before the order was paid: take the units again if they are still free.
    Retake,
    /// There is nothing to commit (released, or never held).
    Refuse,
}

/// What `ReleaseStock` does to a reservation in some state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseAction {
    Release,
    /// Nothing is held any more (or never was): releasing is a no-op.
    Nothing,
}

impl ReservationState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    /// # Errors
    /// [`UnknownState`] for any other text.
    pub fn parse(raw: &str) -> Result<Self, UnknownState> {
        Ok(match raw {
            "held" => Self::Held,
            "committed" => Self::Committed,
            "released" => Self::Released,
            "expired" => Self::Expired,
            "failed" => Self::Failed,
            other => return Err(UnknownState(other.to_owned())),
        })
    }

    #[must_use]
    pub fn on_commit(self) -> CommitAction {
        match self {
            Self::Held => CommitAction::Sell,
            Self::Committed => CommitAction::AlreadySold,
            Self::Expired => CommitAction::Retake,
            Self::Released | Self::Failed => CommitAction::Refuse,
        }
    }

    #[must_use]
    pub fn on_release(self) -> ReleaseAction {
        match self {
            Self::Held => ReleaseAction::Release,
            Self::Committed | Self::Released | Self::Expired | Self::Failed => ReleaseAction::Nothing,
        }
    }
}

/// One product of a reservation and how many units of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// Why the lines of a `ReserveStock` cannot be held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLines {
    #[error("a reservation needs at least one line")]
    Empty,
    #[error("line {sku}: quantity {reason}")]
    BadQuantity { sku: String, reason: InvalidQuantity },
    /// Text that cannot be a SKU names no product: the order asked for something unknown.
    #[error("{0:?} is not a SKU")]
    UnknownSku(String),
}

/// The lines to hold: one per product (repeated SKUs are added up), in SKU order. Holding in
/// one global order means two transactions that want the same products lock their rows in the
/// same order, so they queue instead of deadlocking.
///
/// # Errors
/// [`InvalidLines`]: no lines, a quantity below one or too large, or text that is not a SKU.
pub fn requested_lines<'a>(
    lines: impl IntoIterator<Item = (&'a str, i64)>,
) -> Result<Vec<ReservationLine>, InvalidLines> {
    let lines: Vec<(&str, i64)> = lines.into_iter().collect();
    if lines.is_empty() {
        return Err(InvalidLines::Empty);
    }
    for (sku, quantity) in &lines {
        Quantity::positive(*quantity).map_err(|reason| InvalidLines::BadQuantity {
            sku: (*sku).to_owned(),
            reason,
        })?;
    }
    let mut merged: BTreeMap<Sku, i64> = BTreeMap::new();
    for (raw, quantity) in lines {
        let sku = Sku::parse(raw).map_err(|_| InvalidLines::UnknownSku(raw.to_owned()))?;
        let total = merged.entry(sku).or_insert(0);
        *total = total.saturating_add(quantity);
    }
    merged
        .into_iter()
        .map(|(sku, total)| match Quantity::positive(total) {
            Ok(quantity) => Ok(ReservationLine { sku, quantity }),
            Err(reason) => Err(InvalidLines::BadQuantity {
                sku: sku.into_string(),
                reason,
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: i64) -> ReservationLine {
        ReservationLine {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::new(quantity).unwrap(),
        }
    }

    #[test]
    fn lines_are_merged_per_sku_and_sorted() {
        let lines = requested_lines([("tee-blk-m", 1), ("MUG-001", 2), ("TEE-BLK-M", 3)]).unwrap();
        assert_eq!(lines, [line("MUG-001", 2), line("TEE-BLK-M", 4)]);
    }

    #[test]
    fn bad_quantities_and_empty_orders_are_refused() {
        assert_eq!(requested_lines([]), Err(InvalidLines::Empty));
        assert!(matches!(
            requested_lines([("MUG-001", 0)]),
            Err(InvalidLines::BadQuantity {
                reason: InvalidQuantity::Zero,
                ..
            })
        ));
        assert!(matches!(
            requested_lines([("MUG-001", Quantity::MAX), ("mug-001", 1)]),
            Err(InvalidLines::BadQuantity {
                reason: InvalidQuantity::TooLarge,
                ..
            })
        ));
    }

    #[test]
    fn text_that_is_no_sku_names_an_unknown_product() {
        assert_eq!(
            requested_lines([("MUG-001", 1), ("no such thing!", 1)]),
            Err(InvalidLines::UnknownSku("no such thing!".into()))
        );
    }

    #[test]
    fn only_a_held_reservation_is_sold_or_released() {
        use ReservationState::*;
        assert_eq!(Held.on_commit(), CommitAction::Sell);
        assert_eq!(Committed.on_commit(), CommitAction::AlreadySold);
        assert_eq!(Expired.on_commit(), CommitAction::Retake);
        assert_eq!(Released.on_commit(), CommitAction::Refuse);
        assert_eq!(Failed.on_commit(), CommitAction::Refuse);
        assert_eq!(Held.on_release(), ReleaseAction::Release);
        for state in [Committed, Released, Expired, Failed] {
            assert_eq!(state.on_release(), ReleaseAction::Nothing, "{state:?}");
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        use ReservationState::*;
        for state in [Held, Committed, Released, Expired, Failed] {
            assert_eq!(ReservationState::parse(state.as_str()), Ok(state));
        }
        assert!(ReservationState::parse("lost").is_err());
    }
}
