//! Payments' types and rules, with no I/O: what a charge asks for, the states a payment moves
//! through, and what to do after each answer from the provider.

mod backoff;
mod intent;
mod status;

pub use backoff::Backoff;
pub use intent::{Amount, ChargeIntent, Invalid};
pub use status::{ChargeFailure, FailureReason, Next, PaymentStatus, after_failed_charge};
