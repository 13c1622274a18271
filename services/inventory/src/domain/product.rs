use mercato_contracts::money::{Currency, Money};

use super::quantity::Quantity;
use super::sku::Sku;

/// A product with its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    pub description: String,
    pub price: Money,
    /// Units in the warehouse, sold or not.
    pub on_hand: Quantity,
    /// Units held for orders that are not yet paid.
    pub reserved: Quantity,
}

impl Product {
    /// Units a new order can still have.
    #[must_use]
    pub fn available(&self) -> i64 {
        self.on_hand.value() - self.reserved.value()
    }
}

/// A price below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must not be negative")]
pub struct NegativeAmount;

/// A product's price: an amount in `currency`, never below zero.
///
/// # Errors
/// [`NegativeAmount`].
pub fn price(amount_minor: i64, currency: Currency) -> Result<Money, NegativeAmount> {
    if amount_minor < 0 {
        return Err(NegativeAmount);
    }
    Ok(Money::new(amount_minor, currency))
}

/// A new stock level would leave held orders without their units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must not be below the {reserved} units held for orders")]
pub struct BelowReserved {
    pub reserved: i64,
}

/// Whether `on_hand` may be set while `reserved` units are held.
///
/// # Errors
/// [`BelowReserved`] when the stock would not cover what is held.
pub fn check_stock_level(on_hand: Quantity, reserved: Quantity) -> Result<(), BelowReserved> {
    if on_hand < reserved {
        Err(BelowReserved {
            reserved: reserved.value(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(on_hand: i64, reserved: i64) -> Product {
        Product {
            sku: Sku::parse("MUG-001").unwrap(),
            name: "Mug".into(),
            description: String::new(),
            price: Money::new(1200, Currency::EUR),
            on_hand: Quantity::new(on_hand).unwrap(),
            reserved: Quantity::new(reserved).unwrap(),
        }
    }

    #[test]
    fn available_is_what_is_not_held() {
        assert_eq!(product(10, 3).available(), 7);
        assert_eq!(product(3, 3).available(), 0);
    }

    #[test]
    fn a_price_is_never_negative() {
        assert_eq!(price(-1, Currency::EUR), Err(NegativeAmount));
        assert_eq!(price(0, Currency::EUR), Ok(Money::zero(Currency::EUR)));
        assert_eq!(price(1999, Currency::USD), Ok(Money::new(1999, Currency::USD)));
    }

    #[test]
    fn stock_may_fall_to_what_is_held_but_not_below() {
        let q = |n| Quantity::new(n).unwrap();
        assert_eq!(check_stock_level(q(3), q(3)), Ok(()));
        assert_eq!(check_stock_level(q(2), q(3)), Err(BelowReserved { reserved: 3 }));
        assert_eq!(check_stock_level(q(0), q(0)), Ok(()));
    }
}
