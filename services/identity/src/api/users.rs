use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use mercato_runtime::{Caller, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::accounts::Accounts;

#[derive(Debug, Serialize, ToSchema)]
struct Me {
    id: String,
    email: String,
    name: String,
    #[schema(value_type = Vec<String>)]
    roles: Vec<&'static str>,
}

#[utoipa::path(
    get,
    path = "/api/identity/me",
    operation_id = "me",
    tag = "identity",
    summary = "Who the caller is",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account", body = Me),
        (status = 404, description = "The account no longer exists"),
    )
)]

pub async fn me(State(accounts): State<Arc<Accounts>>, caller: Caller) -> Result<Response, ApiError> {
    let user = accounts.user(&caller.subject).await?;
    Ok(Json(Me {
        id: user.id,
        email: user.email.as_str().to_owned(),
        name: user.name.as_str().to_owned(),
        roles: user.roles.iter().map(|r| r.as_str()).collect(),
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "jwks",
    tag = "identity",
    summary = "The keys that verify access tokens (RFC 7517)",
    responses((status = 200, description = "The JSON Web Key Set", body = serde_json::Value)),
)]
pub async fn jwks(State(accounts): State<Arc<Accounts>>) -> Response {
    let mut response = Json(accounts.keys.published()).into_response();
    // Short enough that a rotation spreads quickly; verifiers also refetch on an unknown kid.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
