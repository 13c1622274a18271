//! Events of the customers service (category `customers`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The bus category of customers' events.
pub const CATEGORY: &str = "customers";

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// Which channels a customer accepts, and in which language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Preferences {
    pub email: bool,
    pub sms: bool,
    pub marketing_opt_in: bool,
    pub locale: String,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            email: true,
            sms: false,
            marketing_opt_in: false,
            locale: "en".into(),
        }
    }
}

/// A customer profile was created (from identity's `UserRegistered`). Stream: the customer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CustomerCreated {
    pub customer_id: String,
    pub email: String,
    pub name: String,
}

/// A customer's profile or preferences changed; carries the whole profile after the change, so
/// a consumer (a cache, notifications) needs no other call. Stream: the customer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CustomerUpdated {
    pub customer_id: String,
    pub email: String,
    pub name: String,
    pub addresses: Vec<Address>,
    pub preferences: Preferences,
}

crate::events!(CustomerCreated = 1, CustomerUpdated = 1);
