/// A number of units: never negative, and bounded so sums of a few cannot overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity(i64);

/// Why a number is not a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidQuantity {
    #[error("must not be negative")]
    Negative,
    #[error("must be at least 1")]
    Zero,
    #[error("must be at most 1000000000")]
    TooLarge,
}

impl Quantity {
    /// The most units of one product the service counts.
    pub const MAX: i64 = 1_000_000_000;

    /// A stock level: zero or more.
    ///
    /// # Errors
    /// [`InvalidQuantity::Negative`] or [`InvalidQuantity::TooLarge`].
    pub fn new(value: i64) -> Result<Self, InvalidQuantity> {
        if value < 0 {
            Err(InvalidQuantity::Negative)
        } else if value > Self::MAX {
            Err(InvalidQuantity::TooLarge)
        } else {
            Ok(Self(value))
        }
    }

    /// A quantity ordered or held: one or more.
    ///
    /// # Errors
    /// As [`Quantity::new`], and [`InvalidQuantity::Zero`].
    pub fn positive(value: i64) -> Result<Self, InvalidQuantity> {
        match Self::new(value)? {
            Self(0) => Err(InvalidQuantity::Zero),
            q => Ok(q),
        }
    }

    #[must_use]
    pub fn value(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stock_level_may_be_zero_but_not_negative() {
        assert_eq!(Quantity::new(0).unwrap().value(), 0);
        assert_eq!(Quantity::new(-1), Err(InvalidQuantity::Negative));
        assert_eq!(Quantity::new(Quantity::MAX + 1), Err(InvalidQuantity::TooLarge));
    }

    #[test]
    fn an_ordered_quantity_is_at_least_one() {
        assert_eq!(Quantity::positive(0), Err(InvalidQuantity::Zero));
        assert_eq!(Quantity::positive(-3), Err(InvalidQuantity::Negative));
        assert_eq!(Quantity::positive(2).unwrap().value(), 2);
    }
}
