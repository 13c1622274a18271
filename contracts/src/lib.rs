//! The contracts between Mercato services: the event payloads each service publishes, with their
//! schema versions. A service depends on this crate, never on another service's crate.
//!
//! - [`identity`]: events the identity service publishes.
//! - [`customers`]: events the customers service publishes.
//!
//! Changing a payload: add a field with a default (compatible), or bump `VERSION` and teach
//! `upcast` how to read the older shape; never repurpose a field.
#![forbid(unsafe_code)]

pub mod customers;
pub mod identity;
