//! The customer aggregate and its rules. No I/O, no serde.

mod address;
mod customer;
mod preferences;

pub use address::{Address, AddressInput};
pub use customer::{Customer, CustomerEvent, Invalid};
pub use preferences::{Locale, Preferences};
