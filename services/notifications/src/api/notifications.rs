use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use mercato_runtime::{Caller, Json};
use mercato_storage::Db;
use serde::Serialize;

use super::ApiError;
use super::page;
use crate::store::{self, Cursor, MailboxItem};

#[derive(Debug, Serialize)]
pub struct Item {
    id: String,
    kind: String,
    channel: String,
    subject: String,
    body: String,
    /// RFC 3339, UTC.
    created_at: String,
}

#[derive(Debug, Serialize)]
pub struct Page {
    items: Vec<Item>,
    next_page_token: Option<String>,
}

fn rfc3339(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
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
pub async fn list(
    State(db): State<Db>,
    caller: Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::MalformedQuery(e.body_text()))?;
    let request = page::parse(&params).map_err(ApiError::Invalid)?;
    // One more than asked tells whether another page follows.
    let mut items =
        store::mailbox_page(&db, &caller.subject, request.after.as_ref(), request.size + 1).await?;
    let more = items.len() > usize::try_from(request.size).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(request.size).unwrap_or(usize::MAX));
    let next_page_token = match items.last() {
        Some(last) if more => Some(page::token(&Cursor {
            created_at: last.created_at,
            id: last.id.clone(),
        })),
        _ => None,
    };
    Ok(Json(Page {
        items: items.into_iter().map(Item::from).collect(),
        next_page_token,
    }))
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
