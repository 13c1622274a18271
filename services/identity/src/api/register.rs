use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use mercato_runtime::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiError;
use crate::accounts::Accounts;

/// What the server checks is stated here as schema keywords, so clients can check it first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Compared without case; one account per address. The pattern is stricter than the server
    /// (no dot before the `@`).
    #[schema(
        max_length = 254,
        pattern = "^[^@\\s.\\u0000-\\u001f\\u007f-\\u009f]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
        example = "ada@example.com"
    )]
    email: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    #[schema(
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        example = "Ada Lovelace"
    )]
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredUser {
    id: String,
    email: String,
    name: String,
}

#[utoipa::path(
    post,
    path = "/api/identity/register",
    operation_id = "register",
    tag = "identity",
    summary = "Register an account",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The account", body = RegisteredUser),
        (status = 409, description = "An account with this email exists"),
    )
)]
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
