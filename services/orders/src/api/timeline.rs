//! When each step of an order's saga happened, from its stream: the time orders recorded
//! placement, inventory's hold, the capture and the end, so clients and load generators read
//! server times instead of their own.

use mercato_contracts::timestamp::rfc3339;
use mercato_storage::sqlx::{Any, Executor};
use serde::Serialize;
use utoipa::ToSchema;

use crate::checkout::OrderError;
use crate::domain::Fact;
use crate::events::from_envelope;

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Timeline {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub placed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub reserved_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub paid_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub confirmed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub cancelled_at: Option<String>,
}

/// The order's timeline.
///
/// # Errors
/// The database failed, or a stored fact does not decode.
pub async fn timeline<'e, E>(executor: E, order_id: &str) -> Result<Timeline, OrderError>
where
    E: Executor<'e, Database = Any>,
{
    let mut timeline = Timeline::default();
    for event in mercato_eventstore::read_stream(executor, order_id).await? {
        let fact = from_envelope(&event.envelope).map_err(mercato_eventstore::EventStoreError::from)?;
        let slot = match fact {
            Fact::Placed { .. } => &mut timeline.placed_at,
            Fact::StockReserved => &mut timeline.reserved_at,
            Fact::PaymentCaptured => &mut timeline.paid_at,
            Fact::Confirmed => &mut timeline.confirmed_at,
            Fact::Cancelled { .. } => &mut timeline.cancelled_at,
            _ => continue,
        };
        slot.get_or_insert_with(|| rfc3339(event.recorded_at));
    }
    Ok(timeline)
}
