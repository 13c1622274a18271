/// An ISO 4217 code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

/// The text is not a currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be an ISO 4217 code of three upper-case letters such as EUR")]
pub struct InvalidCurrency;

/// A price below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must not be negative")]
pub struct NegativeAmount;

impl Currency {
    /// # Errors
    /// [`InvalidCurrency`] unless `raw` is exactly three ASCII upper-case letters.
    pub fn parse(raw: &str) -> Result<Self, InvalidCurrency> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidCurrency)
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount in the currency's minor unit (cents for EUR), never negative.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    /// # Errors
    /// [`NegativeAmount`].
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, NegativeAmount> {
        if amount_minor < 0 {
            return Err(NegativeAmount);
        }
        Ok(Self {
            amount_minor,
            currency,
        })
    }

    #[must_use]
    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    #[must_use]
    pub fn currency(&self) -> &Currency {
        &self.currency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_currency_is_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "E1R", "", "ÉUR"] {
            assert_eq!(Currency::parse(bad), Err(InvalidCurrency), "{bad:?}");
        }
    }

    #[test]
    fn an_amount_is_never_negative() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(Money::new(-1, eur.clone()), Err(NegativeAmount));
        let free = Money::new(0, eur).unwrap();
        assert_eq!(free.amount_minor(), 0);
        assert_eq!(free.currency().as_str(), "EUR");
    }
}
