//! The contracts between Mercato services: the event payloads each service publishes, with their
//! schema versions. A service depends on this crate, never on another service's crate.
//!
//! - [`identity`]: events the identity service publishes.
//! - [`customers`]: events the customers service publishes.
//! - [`orders`]: the order's events and the checkout saga's commands.
//! - [`inventory`]: answers to stock commands; product changes.
//! - [`payments`]: answers to payment commands.
//! - [`money`]: amounts in minor units with a currency.
//!
//! Changing a payload: add a field with a default (compatible), or bump `VERSION` and teach
//! `upcast` how to read the older shape; never repurpose a field.
#![forbid(unsafe_code)]

/// Declares payload types as events named after themselves on the wire, at a schema version.
/// An event that moved past version 1 implements [`mercato_messaging::Event`] by hand instead,
/// with the `upcast` that reads its older shapes.
#[macro_export]
macro_rules! events {
    ($($event:ident = $version:literal),+ $(,)?) => {
        $(
            impl mercato_messaging::Event for $event {
                const TYPE: &'static str = stringify!($event);
                const VERSION: u32 = $version;
            }
        )+
    };
}

pub mod callers;
pub mod customers;
pub mod identity;
pub mod inventory;
pub mod money;
pub mod number;
pub mod openapi;
pub mod orders;
pub mod payments;
#[cfg(test)]
mod proto_compat;

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
