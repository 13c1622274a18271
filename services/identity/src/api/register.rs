use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use mercato_runtime::Json;
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::accounts::Accounts;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    email: String,
    password: String,
    name: String,
}

#[derive(Debug, Serialize)]
pub struct RegisteredUser {
    id: String,
    email: String,
    name: String,
}

pub async fn register(
    State(accounts): State<Arc<Accounts>>,
    Json(request): Json<RegisterRequest>,
) -> Result<Response, ApiError> {
    let user = accounts
        .register(&request.email, &request.password, &request.name)
        .await?;
    tracing::info!(user_id = %user.id, "user registered");
    let body = RegisteredUser {
        id: user.id,
        email: user.email.as_str().to_owned(),
        name: user.name.as_str().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
