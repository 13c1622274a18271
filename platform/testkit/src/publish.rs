//! Events put on the bus as another service's relay would put them.

use mercato_messaging::{Bus, Context, Envelope, Event};

/// Publishes `event` as `source`'s relay would: at position `seq` of `stream`, with `context`.
///
/// # Panics
/// When the event does not serialise or the bus refuses it.
pub async fn publish_at<E: Event>(
    bus: &Bus,
    source: &str,
    stream: &str,
    seq: i64,
    event: &E,
    context: &Context,
) -> Envelope {
    let mut envelope = Envelope::new(source, stream, event, context).expect("an envelope");
    envelope.stream_seq = seq;
    bus.publish(&envelope).await.expect("publish an event");
    envelope
}

/// The context of a saga's command for `order_id`: its correlation id.
#[must_use]
pub fn order_context(order_id: &str) -> Context {
    Context {
        correlation_id: Some(format!("corr-{order_id}")),
        ..Context::default()
    }
}
