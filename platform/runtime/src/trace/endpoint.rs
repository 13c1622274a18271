//! `GET /admin/traces?order_id=…` (or `?trace_id=…`): the spans this process kept of an
//! order's traces, for `mercato trace` and the console. Admin only.

use axum::Router;
use axum::extract::RawQuery;
use axum::routing::get;
use mercato_security::Verifier;
use serde::{Deserialize, Serialize};

use super::StoredSpan;
use crate::auth::Caller;
use crate::problem::{FieldError, Problem};

pub const PATH: &str = "/admin/traces";

/// The answer: the kept spans, by start time (empty when tracing is off or none are kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spans {
    pub spans: Vec<StoredSpan>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wanted {
    order_id: Option<String>,
    trace_id: Option<String>,
}

/// The route, with the verifier its admin check uses.
pub fn routes(verifier: Verifier) -> Router {
    Router::new()
        .route(PATH, get(spans))
        .layer(axum::Extension(verifier))
}

async fn spans(caller: Caller, RawQuery(query): RawQuery) -> Result<axum::Json<Spans>, Problem> {
    caller.require_role("admin")?;
    let wanted: Wanted = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|e| Problem::validation(vec![FieldError::new("query", e.to_string())]))?;
    let store = super::store();
    let spans = match (wanted.order_id, wanted.trace_id) {
        (Some(order), None) if !order.is_empty() => store.map(|s| s.order(&order)),
        (None, Some(trace)) if !trace.is_empty() => store.map(|s| s.trace(&trace)),
        _ => {
            return Err(Problem::validation(vec![FieldError::new(
                "order_id",
                "give exactly one of order_id and trace_id",
            )]));
        }
    };
    Ok(axum::Json(Spans {
        spans: spans.unwrap_or_default(),
    }))
}
