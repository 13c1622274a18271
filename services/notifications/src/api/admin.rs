//! `GET /admin/notifications?event_id=…&event_id=…`: what was sent for these events (an order's,
//! for the operations console), on every channel, with its delivery state. Admin only; not part
//! of the public API document.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use mercato_contracts::timestamp::rfc3339;
use mercato_runtime::{Caller, FieldError, Json, Problem};
use mercato_storage::Db;
use serde::Serialize;

use super::ApiError;
use crate::store;

/// Most events asked about at once: an order's stream is far shorter.
const MAX_EVENTS: usize = 50;

#[derive(Debug, Serialize)]
struct Sent {
    id: String,
    event_id: String,
    kind: String,
    channel: String,
    recipient: Option<String>,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    created_at: String,
    sent_at: Option<String>,
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<Sent>,
}

pub async fn for_events(State(db): State<Db>, caller: Caller, RawQuery(query): RawQuery) -> Response {
    if let Err(refused) = caller.require_role("admin") {
        return refused.into_response();
    }
    let ids: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("event_id="))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() || ids.len() > MAX_EVENTS {
        return Problem::validation(vec![FieldError::new(
            "event_id",
            format!("give between 1 and {MAX_EVENTS} event ids"),
        )])
        .into_response();
    }
    match store::deliveries_for_events(&db, &ids).await {
        Ok(rows) => Json(Page {
            items: rows
                .into_iter()
                .map(|n| Sent {
                    id: n.id,
                    event_id: n.event_id,
                    kind: n.kind,
                    channel: n.channel,
                    recipient: n.recipient,
                    state: n.state,
                    attempts: n.attempts,
                    last_error: n.last_error,
                    created_at: rfc3339(n.created_at),
                    sent_at: n.sent_at.map(rfc3339),
                })
                .collect(),
        })
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
