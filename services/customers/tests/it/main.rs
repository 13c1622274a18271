//! The customers service on its own, on SQLite with the embedded bus and on PostgreSQL with
//! NATS: profiles created from identity's `UserRegistered`, the caller's own profile and
//! preferences over HTTP, `GetCustomer` over gRPC, and bad input refused with problems.
//!
//! - `profiles`: creation from the event (once, however often it arrives), reading and changing
//!   the profile, the events that changes publish.
//! - `preferences`: reading and replacing the communication preferences.
//! - `bad_input`: invalid fields, unknown fields, missing or foreign tokens.
//! - `grpc`: the internal `GetCustomer`.
//! - `service_tokens`: `GetCustomer` with service tokens required: every wrong token refused, a
//!   customer API refusing a service token.

mod bad_input;
mod grpc;
mod preferences;
mod profiles;
mod service_tokens;
mod support;
