//! Behaviour of each layer through its public API, on tokio's paused clock.

mod bulkhead;
mod circuit_breaker;
mod deadline;
mod retry;
mod stack;
mod support;
