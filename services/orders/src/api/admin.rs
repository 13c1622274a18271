//! Admin-only reads for the operations console: any order with its whole event stream (the
//! saga's log: every step, compensation and the cancel reason), a customer's orders, and the
//! checkout funnel per minute. Not part of the public API document.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State as AxumState};
use mercato_contracts::timestamp::rfc3339;
use mercato_runtime::{Caller, FieldError, Json, Problem};
use mercato_storage::sqlx::{self, Row as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::output::OrderOut;
use super::timeline::Timeline;
use super::{ApiError, State};
use crate::checkout::OrderError;
use crate::store;

/// Orders listed for one customer, newest first.
const LIST_LIMIT: i64 = 50;
/// The funnel's longest window.
const MAX_MINUTES: i64 = 120;

#[derive(Debug, Serialize)]
pub struct Event {
    /// The event's id, which what it caused elsewhere names (a notification, a consumer's record).
    id: String,
    /// Position in the order's stream.
    position: i64,
    #[serde(rename = "type")]
    event_type: String,
    recorded_at: String,
    data: Value,
}

#[derive(Debug, Serialize)]
pub struct OrderHistory {
    order: OrderOut,
    events: Vec<Event>,
}

/// `GET /admin/orders/{id}`: the order and every event of its stream.
pub async fn order(
    AxumState(state): AxumState<Arc<State>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderHistory>, ApiError> {
    caller.require_role("admin")?;
    let pool = state.checkout.db.pool();
    let view = store::view(pool, &id)
        .await
        .map_err(OrderError::from)?
        .ok_or_else(|| Problem::not_found(format!("no order {id}")))?;
    let events = mercato_eventstore::read_stream(pool, &id)
        .await
        .map_err(OrderError::from)?
        .into_iter()
        .map(|e| Event {
            id: e.envelope.id,
            position: e.version,
            event_type: e.envelope.event_type,
            recorded_at: rfc3339(e.recorded_at),
            data: e.envelope.payload,
        })
        .collect();
    Ok(Json(OrderHistory {
        order: OrderOut {
            timeline: Some(Timeline::of(&view)),
            ..view.into()
        },
        events,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByCustomer {
    customer_id: String,
}

#[derive(Debug, Serialize)]
pub struct Orders {
    items: Vec<OrderOut>,
}

/// `GET /admin/orders?customer_id=…`: a customer's latest orders.
pub async fn by_customer(
    AxumState(state): AxumState<Arc<State>>,
    caller: Caller,
    query: Result<Query<ByCustomer>, QueryRejection>,
) -> Result<Json<Orders>, ApiError> {
    caller.require_role("admin")?;
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let views = store::customer_orders(state.checkout.db.pool(), &query.customer_id, None, LIST_LIMIT)
        .await
        .map_err(OrderError::from)?;
    Ok(Json(Orders {
        items: views.into_iter().map(OrderOut::from).collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    minutes: Option<i64>,
}

/// One minute of checkouts.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Minute {
    /// The minute's start, RFC 3339.
    minute: String,
    placed: u64,
    confirmed: u64,
    cancelled: u64,
    cancelled_by_reason: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Funnel {
    minutes: Vec<Minute>,
}

/// `GET /admin/funnel?minutes=N`: orders placed, confirmed and cancelled (by reason) in each of
/// the last N minutes (30 when left out), from the event store's record of when each happened.
pub async fn funnel(
    AxumState(state): AxumState<Arc<State>>,
    caller: Caller,
    query: Result<Query<Window>, QueryRejection>,
) -> Result<Json<Funnel>, ApiError> {
    caller.require_role("admin")?;
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let minutes = query.minutes.unwrap_or(30);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(Problem::validation(vec![FieldError::new(
            "minutes",
            format!("must be between 1 and {MAX_MINUTES}"),
        )])
        .into());
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let first = (now / 60_000 - minutes + 1) * 60_000;
    let rows = sqlx::query(store::FUNNEL_EVENTS)
        .bind(first)
        .fetch_all(state.checkout.db.pool())
        .await
        .map_err(|e| OrderError::from(mercato_storage::StorageError::from(e)))?;
    let happened = rows.iter().map(|row| {
        let kind: String = row.get("event_type");
        let at: i64 = row.get("recorded_at");
        let envelope: String = row.get("envelope");
        let reason = serde_json::from_str::<Value>(&envelope)
            .ok()
            .and_then(|e| e["payload"]["reason"].as_str().map(str::to_owned));
        (kind, at, reason)
    });
    Ok(Json(Funnel {
        minutes: per_minute(first, minutes, happened),
    }))
}

fn per_minute(
    first: i64,
    minutes: i64,
    happened: impl Iterator<Item = (String, i64, Option<String>)>,
) -> Vec<Minute> {
    let mut slots: Vec<Minute> = (0..minutes)
        .map(|i| Minute {
            minute: rfc3339(first + i * 60_000),
            ..Minute::default()
        })
        .collect();
    for (kind, at, reason) in happened {
        let Some(slot) = usize::try_from((at - first) / 60_000)
            .ok()
            .and_then(|i| slots.get_mut(i))
        else {
            continue;
        };
        match kind.as_str() {
            "OrderPlaced" => slot.placed += 1,
            "OrderConfirmed" => slot.confirmed += 1,
            _ => {
                slot.cancelled += 1;
                *slot
                    .cancelled_by_reason
                    .entry(reason.unwrap_or_else(|| "unknown".into()))
                    .or_default() += 1;
            }
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fall_into_their_minute_and_cancellations_count_by_reason() {
        let happened = [
            ("OrderPlaced".to_owned(), 60_000, None),
            ("OrderPlaced".to_owned(), 119_999, None),
            ("OrderConfirmed".to_owned(), 120_000, None),
            (
                "OrderCancelled".to_owned(),
                121_000,
                Some("payment_declined".to_owned()),
            ),
            ("OrderPlaced".to_owned(), 10_000_000, None),
        ];
        let minutes = per_minute(60_000, 2, happened.into_iter());
        assert_eq!(minutes[0].placed, 2);
        assert_eq!((minutes[1].confirmed, minutes[1].cancelled), (1, 1));
        assert_eq!(minutes[1].cancelled_by_reason["payment_declined"], 1);
        assert_eq!(minutes.iter().map(|m| m.placed).sum::<u64>(), 2);
    }
}
