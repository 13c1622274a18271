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
    use proptest::prelude::*;

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

    /// Case variants of a few SKUs, some text that is no SKU, and quantities around the bounds.
    fn requests() -> impl Strategy<Value = Vec<(String, i64)>> {
        let sku = prop_oneof![
            4 => prop::sample::select(vec!["MUG-001", "mug-001", "TEE-BLK-M", "tee-blk-m", "CAP-9"]).prop_map(str::to_owned),
            1 => any::<String>(),
        ];
        let quantity = prop_oneof![
            8 => 1_i64..=5,
            1 => prop::sample::select(vec![i64::MIN, -1, 0, Quantity::MAX - 1, Quantity::MAX, Quantity::MAX + 1, i64::MAX]),
        ];
        prop::collection::vec((sku, quantity), 0..8)
    }

    /// The units asked for per product, when every line is one a reservation can hold.
    fn expected_totals(request: &[(String, i64)]) -> Option<BTreeMap<Sku, i128>> {
        let mut totals = BTreeMap::new();
        for (raw, quantity) in request {
            Quantity::positive(*quantity).ok()?;
            *totals.entry(Sku::parse(raw).ok()?).or_insert(0) += i128::from(*quantity);
        }
        let within = !totals.is_empty() && totals.values().all(|t| *t <= i128::from(Quantity::MAX));
        within.then_some(totals)
    }

    proptest! {
        #[test]
        fn lines_hold_exactly_what_was_asked_per_product_or_nothing_at_all(request in requests()) {
            let lines = requested_lines(request.iter().map(|(sku, q)| (sku.as_str(), *q)));
            match (lines, expected_totals(&request)) {
                (Ok(lines), Some(totals)) => {
                    let held: BTreeMap<Sku, i128> = lines
                        .iter()
                        .map(|l| (l.sku.clone(), i128::from(l.quantity.value())))
                        .collect();
                    prop_assert_eq!(held.len(), lines.len(), "one line per product");
                    prop_assert!(lines.windows(2).all(|w| w[0].sku < w[1].sku), "in SKU order");
                    prop_assert_eq!(held, totals);
                }
                (Err(_), None) => {}
                (lines, totals) => prop_assert!(false, "lines {:?}, expected {:?}", lines, totals),
            }
        }

        #[test]
        fn the_same_lines_in_another_order_or_spelling_hold_the_same(request in requests()) {
            let forward = requested_lines(request.iter().map(|(sku, q)| (sku.as_str(), *q)));
            let lowered: Vec<(String, i64)> =
                request.iter().rev().map(|(sku, q)| (sku.to_ascii_lowercase(), *q)).collect();
            let backward = requested_lines(lowered.iter().map(|(sku, q)| (sku.as_str(), *q)));
            prop_assert_eq!(forward.is_ok(), backward.is_ok());
            if let (Ok(forward), Ok(backward)) = (forward, backward) {
                prop_assert_eq!(forward, backward);
            }
        }

        #[test]
        fn held_units_are_given_back_or_sold_at_most_once(
            commands in prop::collection::vec(prop::bool::ANY, 0..12),
            start in prop::sample::select(vec![
                ReservationState::Held,
                ReservationState::Committed,
                ReservationState::Released,
                ReservationState::Expired,
                ReservationState::Failed,
            ]),
        ) {
            // Only a held reservation has units to give back or sell; the first command that
            // acts on them moves it out of `Held`, so every later one finds nothing to do.
            let mut state = start;
            let mut acted = 0;
            for commit in commands {
                let next = if commit {
                    match state.on_commit() {
                        CommitAction::Sell => Some(ReservationState::Committed),
                        CommitAction::Retake | CommitAction::AlreadySold | CommitAction::Refuse => None,
                    }
                } else {
                    match state.on_release() {
                        ReleaseAction::Release => Some(ReservationState::Released),
                        ReleaseAction::Nothing => None,
                    }
                };
                if let Some(next) = next {
                    acted += 1;
                    state = next;
                }
            }
            prop_assert!(acted <= usize::from(start == ReservationState::Held));
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
