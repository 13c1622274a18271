use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use mercato_runtime::{Caller, Json, Problem};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::accounts::{AccountError, Accounts};

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
    Ok(Json(Me::from(user)).into_response())
}

impl From<crate::domain::User> for Me {
    fn from(user: crate::domain::User) -> Self {
        Self {
            id: user.id,
            email: user.email.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            roles: user.roles.iter().map(|r| r.as_str()).collect(),
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByEmail {
    email: String,
}

/// `GET /admin/users?email=…`: the account with that e-mail, for the operations console. Admin
/// only; not part of the public API document.
pub async fn by_email(
    State(accounts): State<Arc<Accounts>>,
    caller: Caller,
    query: Result<axum::extract::Query<ByEmail>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refused) = caller.require_role("admin") {
        return refused.into_response();
    }
    let axum::extract::Query(query) = match query {
        Ok(query) => query,
        Err(e) => return Problem::bad_request(e.body_text()).into_response(),
    };
    match accounts.user_by_email(&query.email).await {
        Ok(user) => Json(Me::from(user)).into_response(),
        Err(AccountError::UnknownUser) => Problem::not_found("no account has that e-mail").into_response(),
        Err(e) => ApiError(e).into_response(),
    }
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
