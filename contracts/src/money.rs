//! Money on the wire: an amount in the currency's minor unit, and an ISO 4217 code.

use serde::{Deserialize, Serialize};

/// `{"amount_minor": 1999, "currency": "EUR"}` is 19.99 euros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}
