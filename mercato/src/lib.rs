//! The `mercato` command's library: configuration, and the wiring that starts services.
//!
//! This is the only crate that knows every service; services never depend on each other.
//!
//! - [`config`]: layered configuration (defaults, `mercato.toml`, `MERCATO_*`), validated.
//! - [`names`]: the services the binary can run.
//! - [`service_config`]: each service's settings, cut from the whole configuration.
//! - [`services`]: starting one service or all of them, and stopping them together.
//!
//! Modules depend one way: `cli` → `services` → `service_config` → `config` → `names`.
//! - [`cli`]: the subcommands.
//! - [`loadgen`]: checkout load at a constant arrival rate, with a latency report.
//! - [`k8s`]: the Kubernetes manifests, rendered from the configuration.
//! - [`certs`]: a local certificate authority for mutual TLS between services.
//! - [`access`]: least-privilege users for NATS and Redis, rendered from what services declare.
//! - [`trace`]: `mercato trace`, an order's trace gathered from every service, as a waterfall.
//! - [`openapi`]: the public OpenAPI document, generated from the services' handlers.
//! - [`output`]: standard output that a reader may close early.
#![forbid(unsafe_code)]

pub mod access;
pub mod certs;
pub mod cli;
pub mod config;
pub mod k8s;
pub mod loadgen;
pub mod names;
pub mod openapi;
pub mod output;
pub mod service_config;
pub mod services;
pub mod trace;

pub use config::{Config, Sources};
pub use names::ServiceName;
pub use services::{Running, Started, start};
