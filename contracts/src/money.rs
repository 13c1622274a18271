//! Money: an amount in the currency's minor unit and an ISO 4217 code, the one type every service
//! uses for prices and totals, in its rules as on the wire and in events.
//!
//! Arithmetic is checked: adding amounts of different currencies, or going past what an `i64`
//! of minor units holds, is an error, never a panic or a silently wrong total.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 4217 code: three upper-case ASCII letters, such as `EUR`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

/// The text is not a currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be an ISO 4217 code of three upper-case letters such as EUR")]
pub struct InvalidCurrency;

impl Currency {
    pub const EUR: Self = Self(*b"EUR");
    pub const USD: Self = Self(*b"USD");
    pub const GBP: Self = Self(*b"GBP");

    /// # Errors
    /// [`InvalidCurrency`] unless `raw` is exactly three ASCII upper-case letters.
    pub fn parse(raw: &str) -> Result<Self, InvalidCurrency> {
        match raw.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(InvalidCurrency),
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII letters get in, so the bytes are always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl FromStr for Currency {
    type Err = InvalidCurrency;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Currency {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Currency {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&raw).map_err(|_| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&raw),
                &"an ISO 4217 code of three upper-case letters",
            )
        })
    }
}

/// `{"amount_minor": 1999, "currency": "EUR"}` is 19.99 euros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

/// Why two amounts cannot be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine amounts in {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("the amount is too large")]
    Overflow,
}

impl Money {
    #[must_use]
    pub const fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }

    #[must_use]
    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] for another currency; [`MoneyError::Overflow`].
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let amount_minor = self
            .amount_minor
            .checked_add(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(amount_minor, self.currency))
    }

    /// This amount `quantity` times, such as a line's unit price times its quantity.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`].
    pub fn checked_mul(self, quantity: i64) -> Result<Self, MoneyError> {
        let amount_minor = self
            .amount_minor
            .checked_mul(quantity)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(amount_minor, self.currency))
    }

    /// The sum of `amounts`, all in `currency`; zero when there are none.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] when one is in another currency; [`MoneyError::Overflow`].
    pub fn sum(currency: Currency, amounts: impl IntoIterator<Item = Self>) -> Result<Self, MoneyError> {
        amounts
            .into_iter()
            .try_fold(Self::zero(currency), Self::checked_add)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_currency_is_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR"), Ok(Currency::EUR));
        assert_eq!(Currency::parse("CHF").unwrap().as_str(), "CHF");
        for bad in ["eur", "EU", "EURO", "E1R", "", "ÉUR", "EU€", " EUR"] {
            assert_eq!(Currency::parse(bad), Err(InvalidCurrency), "{bad:?}");
        }
    }

    #[test]
    fn money_keeps_its_wire_shape() {
        let price = Money::new(1999, Currency::EUR);
        let json = serde_json::to_value(price).unwrap();
        assert_eq!(json, json!({"amount_minor": 1999, "currency": "EUR"}));
        assert_eq!(serde_json::from_value::<Money>(json).unwrap(), price);
    }

    #[test]
    fn money_with_a_malformed_currency_does_not_deserialize() {
        for bad in ["eur", "EURO", "", "€"] {
            let json = json!({"amount_minor": 1, "currency": bad});
            assert!(serde_json::from_value::<Money>(json).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn different_currencies_do_not_add() {
        let sum = Money::new(1, Currency::EUR).checked_add(Money::new(1, Currency::USD));
        assert_eq!(
            sum,
            Err(MoneyError::CurrencyMismatch(Currency::EUR, Currency::USD))
        );
        let total = Money::sum(
            Currency::EUR,
            [Money::new(1, Currency::EUR), Money::new(2, Currency::GBP)],
        );
        assert_eq!(
            total,
            Err(MoneyError::CurrencyMismatch(Currency::EUR, Currency::GBP))
        );
    }

    #[test]
    fn the_sum_of_nothing_is_zero() {
        assert_eq!(Money::sum(Currency::USD, []), Ok(Money::zero(Currency::USD)));
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop_oneof![
            Just(Currency::EUR),
            Just(Currency::USD),
            "[A-Z]{3}".prop_map(|c| Currency::parse(&c).unwrap())
        ]
    }

    fn eur() -> impl Strategy<Value = Money> {
        any::<i64>().prop_map(|amount| Money::new(amount, Currency::EUR))
    }

    /// Amounts whose sums and products stay far inside `i64`.
    fn modest() -> impl Strategy<Value = Money> {
        (-1_000_000_000_i64..1_000_000_000).prop_map(|amount| Money::new(amount, Currency::EUR))
    }

    proptest! {
        #[test]
        fn any_text_parses_as_a_currency_or_fails_cleanly(raw in any::<String>()) {
            match Currency::parse(&raw) {
                Ok(currency) => prop_assert_eq!(currency.as_str(), raw.as_str()),
                Err(InvalidCurrency) => prop_assert!(
                    raw.len() != 3 || !raw.bytes().all(|b| b.is_ascii_uppercase())
                ),
            }
        }

        #[test]
        fn addition_is_exact_or_reports_overflow(a in eur(), b in eur()) {
            match a.checked_add(b) {
                Ok(sum) => prop_assert_eq!(Some(sum.amount_minor), a.amount_minor.checked_add(b.amount_minor)),
                Err(e) => {
                    prop_assert_eq!(e, MoneyError::Overflow);
                    prop_assert!(a.amount_minor.checked_add(b.amount_minor).is_none());
                }
            }
        }

        #[test]
        fn multiplication_is_exact_or_reports_overflow(a in eur(), quantity in any::<i64>()) {
            match a.checked_mul(quantity) {
                Ok(product) => {
                    prop_assert_eq!(Some(product.amount_minor), a.amount_minor.checked_mul(quantity));
                    prop_assert_eq!(product.currency, a.currency);
                }
                Err(e) => {
                    prop_assert_eq!(e, MoneyError::Overflow);
                    prop_assert!(a.amount_minor.checked_mul(quantity).is_none());
                }
            }
        }

        #[test]
        fn addition_is_commutative(a in eur(), b in eur()) {
            prop_assert_eq!(a.checked_add(b), b.checked_add(a));
        }

        #[test]
        fn addition_is_associative_where_defined(a in eur(), b in eur(), c in eur()) {
            let left = a.checked_add(b).and_then(|ab| ab.checked_add(c));
            let right = b.checked_add(c).and_then(|bc| a.checked_add(bc));
            if let (Ok(left), Ok(right)) = (left, right) {
                prop_assert_eq!(left, right);
            }
        }

        #[test]
        fn modest_amounts_always_add_and_associate(a in modest(), b in modest(), c in modest()) {
            let left = a.checked_add(b).and_then(|ab| ab.checked_add(c));
            let right = b.checked_add(c).and_then(|bc| a.checked_add(bc));
            prop_assert!(left.is_ok());
            prop_assert_eq!(left, right);
        }

        #[test]
        fn multiplying_by_a_quantity_distributes_over_addition(
            a in modest(), b in modest(), quantity in -1_000_i64..1_000
        ) {
            let sum_then_times = a.checked_add(b).and_then(|s| s.checked_mul(quantity));
            let times_then_sum = a.checked_mul(quantity).and_then(|x| x.checked_add(b.checked_mul(quantity)?));
            prop_assert_eq!(sum_then_times, times_then_sum);
        }

        #[test]
        fn multiplying_is_adding_the_amount_quantity_times(a in modest(), quantity in 0_usize..50) {
            let by_multiplying = a.checked_mul(i64::try_from(quantity).unwrap());
            let by_adding = Money::sum(a.currency, std::iter::repeat_n(a, quantity));
            prop_assert_eq!(by_multiplying, by_adding);
        }

        #[test]
        fn the_sum_does_not_depend_on_the_order(amounts in prop::collection::vec(eur(), 0..8)) {
            let forward = Money::sum(Currency::EUR, amounts.iter().copied());
            let backward = Money::sum(Currency::EUR, amounts.iter().rev().copied());
            // Partial sums may overflow in one order and not the other; exact totals agree.
            let exact: i128 = amounts.iter().map(|m| i128::from(m.amount_minor)).sum();
            if let Ok(total) = i64::try_from(exact) {
                for sum in [forward, backward] {
                    match sum {
                        Ok(sum) => prop_assert_eq!(sum.amount_minor, total),
                        Err(e) => prop_assert_eq!(e, MoneyError::Overflow),
                    }
                }
            } else {
                prop_assert_eq!(forward, Err(MoneyError::Overflow));
                prop_assert_eq!(backward, Err(MoneyError::Overflow));
            }
        }

        #[test]
        fn money_survives_a_json_round_trip(amount in any::<i64>(), currency in currency()) {
            let money = Money::new(amount, currency);
            let json = serde_json::to_string(&money).unwrap();
            prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(value, json!({"amount_minor": amount, "currency": currency.as_str()}));
        }

        #[test]
        fn any_json_object_deserializes_as_money_or_fails_cleanly(
            amount in any::<i64>(), currency in any::<String>()
        ) {
            let json = json!({"amount_minor": amount, "currency": currency});
            let parsed = serde_json::from_value::<Money>(json);
            prop_assert_eq!(parsed.is_ok(), Currency::parse(&currency).is_ok());
        }
    }
}
