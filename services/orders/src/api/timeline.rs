//! When each step of an order's saga happened: the time orders recorded placement, inventory's
//! hold, the capture and the end (each the first of its kind in the order's stream), so clients
//! and load generators read server times instead of their own. The read model's row keeps them
//! (`crate::projection`), so the timeline costs no read of the stream.

use mercato_contracts::timestamp::rfc3339;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::OrderView;

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

impl Timeline {
    /// The timeline of the order `view` holds.
    #[must_use]
    pub fn of(view: &OrderView) -> Self {
        let at = |ms: Option<i64>| ms.map(rfc3339);
        Self {
            placed_at: Some(rfc3339(view.created_at)),
            reserved_at: at(view.reserved_at),
            paid_at: at(view.paid_at),
            confirmed_at: at(view.confirmed_at),
            cancelled_at: at(view.cancelled_at),
        }
    }
}
