//! What a `ChargePayment` command asks for, parsed at the edge so the rest of the service only
//! sees charges it can actually send to a provider.

use mercato_contracts::money::Currency;

/// Why a charge request cannot be sent to any provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("amount {0} is not a positive number of minor units")]
    Amount(i64),
    #[error("currency {0:?} is not an ISO 4217 code (three upper-case letters)")]
    Currency(String),
    #[error("card token must be 1-{max} printable ASCII characters", max = ChargeIntent::MAX_TOKEN_LEN)]
    CardToken,
    #[error("idempotency key must be 1-{max} printable ASCII characters", max = ChargeIntent::MAX_KEY_LEN)]
    IdempotencyKey,
    #[error("{0} must not be empty")]
    Empty(&'static str),
}

/// A positive amount in a currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    minor: i64,
    currency: String,
}

impl Amount {
    /// # Errors
    /// A non-positive amount or a currency that is not three upper-case ASCII letters.
    pub fn new(minor: i64, currency: &str) -> Result<Self, Invalid> {
        if minor <= 0 {
            return Err(Invalid::Amount(minor));
        }
        if Currency::parse(currency).is_err() {
            return Err(Invalid::Currency(currency.to_owned()));
        }
        Ok(Self {
            minor,
            currency: currency.to_owned(),
        })
    }

    #[must_use]
    pub fn minor(&self) -> i64 {
        self.minor
    }

    #[must_use]
    pub fn currency(&self) -> &str {
        &self.currency
    }
}

/// A charge the saga asked for, valid to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeIntent {
    pub order_id: String,
    pub customer_id: String,
    pub amount: Amount,
    pub card_token: String,
    /// Stable per order: the provider sees the same key on every retry and restart.
    pub idempotency_key: String,
}

impl ChargeIntent {
    pub const MAX_TOKEN_LEN: usize = 128;
    pub const MAX_KEY_LEN: usize = 255;

    /// # Errors
    /// The first field that no provider would accept.
    pub fn new(
        order_id: &str,
        customer_id: &str,
        amount: Amount,
        card_token: &str,
        idempotency_key: &str,
    ) -> Result<Self, Invalid> {
        if order_id.is_empty() {
            return Err(Invalid::Empty("order_id"));
        }
        if customer_id.is_empty() {
            return Err(Invalid::Empty("customer_id"));
        }
        if !printable(card_token, Self::MAX_TOKEN_LEN) {
            return Err(Invalid::CardToken);
        }
        if !printable(idempotency_key, Self::MAX_KEY_LEN) {
            return Err(Invalid::IdempotencyKey);
        }
        Ok(Self {
            order_id: order_id.to_owned(),
            customer_id: customer_id.to_owned(),
            amount,
            card_token: card_token.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        })
    }
}

/// Non-empty, bounded, and safe to put in an HTTP header.
fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amount_is_positive_and_in_an_iso_currency() {
        assert_eq!(Amount::new(1999, "EUR").unwrap().minor(), 1999);
        assert_eq!(Amount::new(0, "EUR"), Err(Invalid::Amount(0)));
        assert_eq!(Amount::new(-5, "EUR"), Err(Invalid::Amount(-5)));
        assert!(matches!(Amount::new(1, "eur"), Err(Invalid::Currency(_))));
        assert!(matches!(Amount::new(1, "EURO"), Err(Invalid::Currency(_))));
    }

    #[test]
    fn a_charge_needs_a_token_and_a_key_fit_for_a_header() {
        let amount = || Amount::new(100, "EUR").unwrap();
        assert!(ChargeIntent::new("o-1", "c-1", amount(), "tok_visa", "order:o-1").is_ok());
        assert_eq!(
            ChargeIntent::new("o-1", "c-1", amount(), "tok visa", "k"),
            Err(Invalid::CardToken)
        );
        assert_eq!(
            ChargeIntent::new("o-1", "c-1", amount(), "tok_visa", ""),
            Err(Invalid::IdempotencyKey)
        );
        assert_eq!(
            ChargeIntent::new("o-1", "c-1", amount(), "tok_visa", "k\n"),
            Err(Invalid::IdempotencyKey)
        );
        assert_eq!(
            ChargeIntent::new("", "c-1", amount(), "tok_visa", "k"),
            Err(Invalid::Empty("order_id"))
        );
    }
}
