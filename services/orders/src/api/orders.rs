use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State as AxumState};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use mercato_contracts::money::Currency;
use mercato_contracts::openapi::PageParams;
use mercato_messaging::Context;
use mercato_runtime::correlation::CorrelationId;
use mercato_runtime::{Caller, FieldError, Json, Problem, page};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::error::lines_problem;
use super::input::PlaceOrder;
use super::output::{OrderOut, Page};
use super::timeline::Timeline;
use super::wait::{Seen, Wait, WaitQuery};
use super::{ApiError, State};
use crate::domain::{Line, Money, total};
use crate::store;

/// When a refused order may be tried again: about the time the backlog takes to move on.
const RETRY_AFTER_SECS: u64 = 1;

/// `503` with `Retry-After`, of its own type so clients can tell it from a failure.
fn backlog_full() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "backlog-full",
        "Too many orders in progress",
    )
    .with_detail("too many orders are being processed; try again shortly")
    .with_header(header::RETRY_AFTER, &RETRY_AFTER_SECS.to_string())
}

fn context() -> Context {
    Context {
        correlation_id: CorrelationId::current().map(|c| c.to_string()),
        ..Context::default()
    }
}

/// The `Idempotency-Key` header: absent, or 1 to 128 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::validation(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 128 visible ASCII characters",
        )]));
    }
    Ok(Some(key.to_owned()))
}

/// The request's fingerprint: the same key with another body is a different request.
fn fingerprint(order: &PlaceOrder) -> String {
    let canonical = serde_json::to_vec(order).unwrap_or_default();
    Sha256::digest(canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn owned(state: &State, caller: &Caller, id: &str) -> Result<store::OrderView, ApiError> {
    match store::view(state.checkout.db.pool(), id)
        .await
        .map_err(crate::checkout::OrderError::from)?
    {
        Some(view) if view.customer_id == caller.subject => Ok(view),
        _ => Err(Problem::not_found("no such order").into()),
    }
}

/// The order an idempotent replay placed before.
async fn replayed(state: &State, order_id: &str) -> Result<store::OrderView, ApiError> {
    let pool = state.checkout.db.pool();
    match store::view(pool, order_id)
        .await
        .map_err(crate::checkout::OrderError::from)?
    {
        Some(view) => Ok(view),
        // Every append writes its order's row, so this order was placed before rows were
        // written with the append and the projection has not written it yet: it exists all
        // the same, so answer from its stream.
        None => {
            let order = crate::checkout::load(pool, order_id)
                .await?
                .ok_or(crate::checkout::OrderError::NotFound)?;
            Ok(store::OrderView::pending(&order, mercato_storage::now_millis()))
        }
    }
}

fn created(view: store::OrderView) -> Response {
    let location = format!("/api/orders/{}", view.order_id);
    let mut response = (StatusCode::CREATED, Json(OrderOut::from(view))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[utoipa::path(
    post,
    path = "/api/orders",
    operation_id = "place_order",
    tag = "orders",
    summary = "Place an order; the checkout goes on after the answer",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,128}$",
        description = "A repeat with the same key and body answers the same order.")),
    request_body = PlaceOrder,
    responses(
        (status = 201, description = "The order, pending", body = OrderOut,
            headers(("Location" = String, description = "The order's address"))),
        (status = 422, description = "Invalid fields, an unknown product, no customer profile yet, or a key used with another body"),
    )
)]
pub async fn place(
    AxumState(state): AxumState<Arc<State>>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<PlaceOrder>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let valid = body.validate().map_err(Problem::validation)?;
    let hash = fingerprint(&body);
    // Before any call or write for this order: a refusal costs nothing and leaves nothing behind.
    let Some(admission) = state.backlog.admit().await else {
        return Err(backlog_full().into());
    };
    if !state.lookups.customer_exists(&caller.subject).await? {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no-customer-profile",
            "No customer profile",
        )
        .with_detail(
            "there is no customer profile for this account yet; it is created shortly after registration",
        )
        .into());
    }
    let skus: Vec<String> = valid.lines.iter().map(|(sku, _)| sku.clone()).collect();
    let (products, unknown) = state.lookups.products(&skus).await?;
    let position = |sku: &str| valid.lines.iter().position(|(s, _)| s == sku).unwrap_or(0);
    if !unknown.is_empty() {
        let errors = unknown
            .iter()
            .map(|sku| {
                FieldError::new(
                    format!("items[{}].sku", position(sku)),
                    format!("there is no product {sku}"),
                )
            })
            .collect();
        return Err(Problem::validation(errors).into());
    }
    let mut lines = Vec::with_capacity(valid.lines.len());
    for (sku, quantity) in &valid.lines {
        let Some(product) = products.iter().find(|p| &p.sku == sku) else {
            return Err(Problem::validation(vec![FieldError::new(
                format!("items[{}].sku", position(sku)),
                "unknown product",
            )])
            .into());
        };
        let Ok(currency) = Currency::parse(&product.currency) else {
            tracing::error!(sku = %sku, currency = %product.currency, "inventory priced a product in no known currency");
            return Err(Problem::internal().into());
        };
        lines.push(Line {
            sku: sku.clone(),
            name: product.name.clone(),
            quantity: *quantity,
            unit_price: Money::new(product.amount_minor, currency),
        });
    }
    total(&lines).map_err(lines_problem)?;
    let idempotency = key.as_deref().map(|k| (k, hash.as_str()));
    let (order_id, placed) = state
        .checkout
        .place(&caller.subject, lines, &valid.card_token, idempotency, &context())
        .await?;
    let view = match placed {
        // The row as the placement wrote it.
        Some(view) => {
            admission.placed();
            tracing::info!(%order_id, "order placed");
            view
        }
        None => replayed(&state, &order_id).await?,
    };
    Ok(created(view))
}

#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    operation_id = "get_order",
    tag = "orders",
    summary = "One of the caller's orders, with its timeline; a long poll with wait_for_change_from",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The order's id"),
        ("wait_for_change_from" = Option<String>, Query, pattern = "^([0-9]{1,18}|pending|confirmed|shipped|delivered|cancelled)$",
            description = "The version or status the client has: answers once the order differs, or when the wait ends."),
        ("wait_ms" = Option<i64>, Query, minimum = 0, maximum = 30000,
            description = "How long to wait, 5000 when left out; only with wait_for_change_from."),
    ),
    responses(
        (status = 200, description = "The order", body = OrderOut),
        (status = 400, description = "The query string does not parse"),
        (status = 404, description = "No order of the caller's with this id"),
        (status = 422, description = "`wait_ms` without `wait_for_change_from`"),
    )
)]
pub async fn get(
    AxumState(state): AxumState<Arc<State>>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<OrderOut>, ApiError> {
    // A query that does not parse at all (a parameter given twice) is a problem too.
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let view = match query.parse()? {
        None => owned(&state, &caller, &id).await?,
        Some(wait) => changed(&state, &caller, &id, &wait).await?,
    };
    Ok(Json(OrderOut {
        timeline: Some(Timeline::of(&view)),
        ..view.into()
    }))
}

/// The order once it differs from what the client has, or as it is when the wait ends. Reads the
/// row when it starts and after each wake that announced a change it has not read (of any kind
/// for a client that has a version, of status for one that has a status); with no room to
/// watch, at once.
async fn changed(
    state: &State,
    caller: &Caller,
    id: &str,
    wait: &Wait,
) -> Result<store::OrderView, ApiError> {
    let watch = state.changes.watch(id);
    let mut view = owned(state, caller, id).await?;
    loop {
        if wait.seen.differs(&view) {
            return Ok(view);
        }
        let Some(watch) = &watch else {
            return Ok(view);
        };
        let unread = |view: &store::OrderView| match wait.seen {
            Seen::Version(_) => watch.newer_than(view.version),
            Seen::Status(_) => watch.status_newer_than(view.version),
        };
        let mut wake = std::pin::pin!(watch.changed());
        wake.as_mut().enable();
        // Enabled before this look, so an announcement after it still wakes the wait below.
        if !unread(&view) {
            let woken = tokio::time::Instant::now() < wait.until
                && tokio::time::timeout_at(wait.until, wake).await.is_ok();
            if !woken {
                // The order as it is: versions that kept the status were not read.
                if watch.newer_than(view.version) {
                    view = owned(state, caller, id).await?;
                }
                return Ok(view);
            }
            if !unread(&view) {
                continue;
            }
        }
        view = owned(state, caller, id).await?;
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page_size: Option<String>,
    page_token: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/orders",
    operation_id = "list_orders",
    tag = "orders",
    summary = "The caller's orders, newest first",
    security(("bearer" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of orders", body = Page),
        (status = 400, description = "The query string does not parse"),
        (status = 422, description = "`page_size` or `page_token` is invalid"),
    )
)]
pub async fn list(
    AxumState(state): AxumState<Arc<State>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    // A query that does not parse at all (a parameter given twice) is a problem too.
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let request = page::parse::<(i64, String)>(query.page_size.as_deref(), query.page_token.as_deref())?;
    let mut views = store::customer_orders(
        state.checkout.db.pool(),
        &caller.subject,
        request.after.clone(),
        request.fetch(),
    )
    .await
    .map_err(crate::checkout::OrderError::from)?;
    let next_page_token = request.finish(&mut views, |v| (v.created_at, v.order_id.clone()));
    Ok(Json(Page {
        items: views.into_iter().map(OrderOut::from).collect(),
        next_page_token,
    }))
}

#[utoipa::path(
    post,
    path = "/api/orders/{id}/cancel",
    operation_id = "cancel_order",
    tag = "orders",
    summary = "Cancel one of the caller's orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderOut),
        (status = 404, description = "No order of the caller's with this id"),
        (status = 409, description = "The order can no longer be cancelled"),
    )
)]
pub async fn cancel(
    AxumState(state): AxumState<Arc<State>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderOut>, ApiError> {
    owned(&state, &caller, &id).await?;
    state.checkout.cancel(&id, &context()).await?;
    Ok(Json(owned(&state, &caller, &id).await?.into()))
}

async fn admin_change(
    state: &State,
    caller: &Caller,
    id: &str,
    ship: bool,
) -> Result<Json<OrderOut>, ApiError> {
    caller.require_role("admin")?;
    if ship {
        state.checkout.ship(id, &context()).await?;
    } else {
        state.checkout.deliver(id, &context()).await?;
    }
    let view = store::view(state.checkout.db.pool(), id)
        .await
        .map_err(crate::checkout::OrderError::from)?
        .ok_or(crate::checkout::OrderError::NotFound)?;
    Ok(Json(view.into()))
}

#[utoipa::path(
    post,
    path = "/api/orders/{id}/ship",
    operation_id = "ship_order",
    tag = "orders",
    summary = "Mark a confirmed order shipped (admin)",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderOut),
        (status = 403, description = "The caller is not an admin"),
        (status = 404, description = "No such order"),
        (status = 409, description = "The order is not confirmed"),
    )
)]
pub async fn ship(
    AxumState(state): AxumState<Arc<State>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderOut>, ApiError> {
    admin_change(&state, &caller, &id, true).await
}

#[utoipa::path(
    post,
    path = "/api/orders/{id}/deliver",
    operation_id = "deliver_order",
    tag = "orders",
    summary = "Mark a shipped order delivered (admin)",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderOut),
        (status = 403, description = "The caller is not an admin"),
        (status = 404, description = "No such order"),
        (status = 409, description = "The order is not shipped"),
    )
)]
pub async fn deliver(
    AxumState(state): AxumState<Arc<State>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderOut>, ApiError> {
    admin_change(&state, &caller, &id, false).await
}
