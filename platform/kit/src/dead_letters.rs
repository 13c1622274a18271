//! `GET /admin/dead-letters` and `POST /admin/dead-letters/{id}/replay`: the dead letters of
//! this service's own consumer groups, for the operations console (the gateway has no bus).
//! Admin only.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use mercato_messaging::{Bus, DeadLetter};
use mercato_runtime::{Caller, Json, Problem};
use mercato_security::Verifier;
use serde::Serialize;

/// The most dead letters read from the bus per call; a backlog larger than this is a matter
/// for `mercato dlq`, not a page.
const READ_LIMIT: usize = 1_000;

#[derive(Clone)]
struct Letters {
    bus: Bus,
    groups: Arc<Vec<&'static str>>,
}

#[derive(Debug, Serialize)]
struct Letter {
    id: String,
    group: String,
    event_type: String,
    event_id: String,
    stream: String,
    error: String,
    attempts: u32,
    parked_at_ms: i64,
}

impl From<DeadLetter> for Letter {
    fn from(l: DeadLetter) -> Self {
        Self {
            id: l.id,
            group: l.group,
            event_type: l.envelope.event_type,
            event_id: l.envelope.id,
            stream: l.envelope.stream_id,
            error: l.error,
            attempts: l.attempts,
            parked_at_ms: l.parked_at,
        }
    }
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<Letter>,
}

pub fn routes(bus: Bus, groups: Vec<&'static str>, verifier: Verifier) -> Router {
    Router::new()
        .route("/admin/dead-letters", get(list))
        .route("/admin/dead-letters/{id}/replay", post(replay))
        .layer(axum::Extension(verifier))
        .with_state(Letters {
            bus,
            groups: Arc::new(groups),
        })
}

impl Letters {
    async fn own(&self) -> Result<Vec<DeadLetter>, Problem> {
        let all = self.bus.dead_letters(READ_LIMIT).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read the dead letters");
            Problem::unavailable("the event bus cannot be read right now", 1)
        })?;
        Ok(all
            .into_iter()
            .filter(|l| self.groups.contains(&l.group.as_str()))
            .collect())
    }
}

async fn list(State(letters): State<Letters>, caller: Caller) -> Result<Json<Page>, Problem> {
    caller.require_role("admin")?;
    let items = letters.own().await?.into_iter().map(Letter::from).collect();
    Ok(Json(Page { items }))
}

async fn replay(
    State(letters): State<Letters>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.require_role("admin")?;
    // Only a letter of this service's groups: another service replays its own.
    if !letters.own().await?.iter().any(|l| l.id == id) {
        return Err(Problem::not_found(format!("no dead letter {id} of this service")));
    }
    let replayed = letters.bus.replay_dead_letter(&id).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot replay a dead letter");
        Problem::unavailable("the event bus cannot be written right now", 1)
    })?;
    if !replayed {
        return Err(Problem::not_found(format!("no dead letter {id}")));
    }
    tracing::info!(target: "mercato::audit", admin = %caller.subject, action = "replay dead letter", on = %id, "admin action");
    Ok(StatusCode::NO_CONTENT.into_response())
}
