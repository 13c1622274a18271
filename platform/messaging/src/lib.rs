//! Events between Mercato services, lost never and applied once.
//!
//! - [`envelope`]: the message format (id, type, schema version, source, stream and position,
//!   correlation, causation, trace context, JSON payload) and upcasting of older schemas.
//! - [`bus`]: publish and consume, on the embedded bus or NATS JetStream; broadcast
//!   subscriptions for caches.
//! - [`outbox`]: events written in the same transaction as the state change.
//! - [`relay`]: publishes the outbox, in order, marking rows sent (a crash means a duplicate,
//!   never a loss); each envelope carries the latest earlier position of each event type in its
//!   stream, so a consumer of some types knows its predecessor.
//! - [`inbox`]: the idempotent consumer: a handler's effects and the record that the event was
//!   handled commit together; per-stream order is restored; poison messages are parked.
//! - [`until_commit`]: what a handler keeps about its events until their transaction commits.
//!
//! Disk stays bounded: the embedded log is trimmed behind every group after a replay window,
//! dedup records and published outbox rows are pruned after windows longer than any redelivery.
#![forbid(unsafe_code)]

pub mod bus;
pub mod envelope;
pub mod health;
pub mod inbox;
mod latest;
pub mod outbox;
mod preceding;
pub mod relay;
mod retention;
mod settings;
pub mod until_commit;

pub use bus::{
    Acker, Broadcast, Bus, BusConfig, BusError, Consumer, ConsumerSpec, DeadLetter, Delivery, PartialPublish,
    Subscription,
};
pub use envelope::{Context, Envelope, EnvelopeError, Event, Upcaster, upcast};
pub use inbox::{ConsumerMetrics, Handler, HandlerError, HandlerFuture, Inbox, InboxConfig};
pub use outbox::Outbox;
pub use relay::{Relay, RelayConfig, RelayMetrics};
pub use until_commit::UntilCommit;
