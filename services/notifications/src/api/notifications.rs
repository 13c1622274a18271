use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use mercato_contracts::openapi::{PageParams, PageQueryRefused};
use mercato_contracts::timestamp::rfc3339;
use mercato_runtime::{Caller, Json, page};
use mercato_storage::Db;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::store::{self, Cursor, MailboxItem};

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Notification)]
pub struct Item {
    id: String,
    kind: String,
    channel: String,
    subject: String,
    body: String,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NotificationPage)]
pub struct Page {
    items: Vec<Item>,
    next_page_token: Option<String>,
}

impl From<MailboxItem> for Item {
    fn from(m: MailboxItem) -> Self {
        Self {
            created_at: rfc3339(m.created_at),
            id: m.id,
            kind: m.kind,
            channel: m.channel,
            subject: m.subject,
            body: m.body,
        }
    }
}

/// `GET /api/notifications`: the caller's mailbox, newest first.
#[utoipa::path(
    get,
    path = "/api/notifications",
    operation_id = "list_notifications",
    tag = "notifications",
    summary = "The caller's mailbox, newest first",
    security(("bearer" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of notifications", body = Page),
        PageQueryRefused,
    )
)]
pub async fn list(
    State(db): State<Db>,
    caller: Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::MalformedQuery(e.body_text()))?;
    let request = page::parse::<(i64, String)>(
        params.get("page_size").map(String::as_str),
        params.get("page_token").map(String::as_str),
    )
    .map_err(ApiError::Invalid)?;
    let after = request
        .after
        .clone()
        .map(|(created_at, id)| Cursor { created_at, id });
    let mut items = store::mailbox_page(&db, &caller.subject, after.as_ref(), request.fetch()).await?;
    let next_page_token = request.finish(&mut items, |last| (last.created_at, last.id.clone()));
    Ok(Json(Page {
        items: items.into_iter().map(Item::from).collect(),
        next_page_token,
    }))
}
