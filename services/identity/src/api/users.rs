use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use mercato_runtime::{Caller, Json};
use serde::Serialize;

use super::ApiError;
use crate::accounts::Accounts;

#[derive(Debug, Serialize)]
struct Me {
    id: String,
    email: String,
    name: String,
    roles: Vec<&'static str>,
}

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

pub async fn jwks(State(accounts): State<Arc<Accounts>>) -> Response {
    let mut response = Json(accounts.keys.published()).into_response();
    // Short enough that a rotation spreads quickly; verifiers also refetch on an unknown kid.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
