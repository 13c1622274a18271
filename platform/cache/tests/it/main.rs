//! Integration tests of `mercato-cache` against real brokers and a real Redis.
//!
//! - `invalidation`: two instances, each with its own cache and invalidator on its own bus
//!   connection; an event invalidates both. Runs as `embedded::` and `nats::` (a private
//!   `nats-server`).
//! - `l2::redis`: L2 shared by two instances (needs Redis at 127.0.0.1:6379, or
//!   `MERCATO_TEST_REDIS_URL`); each test uses a key prefix of its own.

mod invalidation;
mod l2 {
    mod redis;
}
