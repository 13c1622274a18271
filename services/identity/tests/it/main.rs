//! Integration tests of `mercato-identity`: the real service on a loopback port over a fresh
//! database, driven over HTTP. Every test runs twice, as `sqlite::name` and `postgres::name`.
//!
//! - `support`: `spawn_app()`, the HTTP helpers and JWT decoding.
//! - `register`: `POST /api/identity/register`: normalisation, validation, duplicates, races.
//! - `token`: the password grant, form-encoded and JSON, and its OAuth 2 errors.
//! - `refresh`: refresh-token rotation and reuse detection.
//! - `me`: `GET /api/identity/me` and bearer authentication.
//! - `keys`: the JWKS and signing-key rotation without a restart.
//! - `admin`: `create_admin`, as the CLI calls it.
//! - `service_tokens`: the `client_credentials` grant, and the runtime's token cache against it.
//! - `operations`: health, readiness, metrics, unknown routes and shutdown.

mod admin;
mod events;
mod keys;
mod me;
mod operations;
mod refresh;
mod register;
mod service_tokens;
mod support;
mod token;
