//! The contracts between Mercato services: the event payloads each service publishes, with their
//! schema versions. A service depends on this crate, never on another service's crate.
//!
//! - [`identity`]: events the identity service publishes.
//! - [`customers`]: events the customers service publishes.
//! - [`orders`]: the order's events and the checkout saga's commands.
//! - [`inventory`]: answers to stock commands; product changes.
//! - [`payments`]: answers to payment commands.
//! - [`money`]: amounts in minor units with a currency; [`timestamp`]: times on the HTTP APIs.
//! - [`catalogue`]: every event type with its JSON Schema; [`pact`]: what each consumer expects
//!   of the messages it reads; [`files`]: both as the files under `contracts/`.
//!
//! Changing a payload: add a field with a default (compatible), or add the next version's
//! upcaster to the type's [`mercato_messaging::Event::UPCASTERS`] (which bumps its version) and
//! keep the older version's schema under `contracts/events/`; never repurpose a field.
#![forbid(unsafe_code)]

/// Declares payload types as events named after themselves on the wire, at version 1: an
/// event that moved on implements [`mercato_messaging::Event`] by hand, with the upcasters that
/// read its older shapes, and its version follows from them.
#[macro_export]
macro_rules! events {
    ($($event:ident = $version:literal),+ $(,)?) => {
        $(
            impl mercato_messaging::Event for $event {
                const TYPE: &'static str = stringify!($event);
            }
            const _: () = assert!(
                <$event as mercato_messaging::Event>::VERSION == $version,
                "a version past 1 needs its upcasters: implement Event by hand"
            );
        )+
    };
}

pub mod callers;
pub mod catalogue;
pub mod customers;
pub mod files;
pub mod identity;
pub mod inventory;
pub mod money;
pub mod number;
pub mod openapi;
pub mod orders;
pub mod pact;
pub mod payments;
#[cfg(test)]
mod proto_compat;
pub mod timestamp;

/// The internal gRPC APIs, generated from `proto/`.
pub mod grpc {
    /// `mercato.inventory.v1`: `GetProducts`.
    pub mod inventory {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("mercato.inventory.v1");
    }
    /// `mercato.customers.v1`: `GetCustomer`.
    pub mod customers {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("mercato.customers.v1");
    }
}

/// Asserts that some finding of a check (a broken contract, an incompatible proto) satisfies
/// `wanted`, showing them all when none does.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_found(found: &[String], wanted: impl Fn(&str) -> bool) {
    assert!(found.iter().any(|f| wanted(f)), "{found:?}");
}
