//! `POST /api/identity/token`, in the OAuth 2 style: form-encoded (or JSON) grants.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use mercato_runtime::{Json, Problem};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::error::oauth_error;
use crate::accounts::Accounts;

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Debug, Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    // The media type is what comes before any parameters (`; charset=utf-8`).
    let content_type = content_type.split(';').next().unwrap_or_default().trim();
    if content_type == "application/x-www-form-urlencoded" {
        serde_urlencoded::from_bytes(body)
            .map_err(|e| oauth_error("invalid_request", &format!("the form is malformed: {e}")))
    } else if content_type == "application/json" {
        serde_json::from_slice(body)
            .map_err(|e| oauth_error("invalid_request", &format!("the JSON body is malformed: {e}")))
    } else {
        Err(oauth_error(
            "invalid_request",
            "send the request as application/x-www-form-urlencoded or application/json",
        ))
    }
}

fn required<'a>(value: Option<&'a String>, name: &'static str) -> Result<&'a str, Problem> {
    value
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| oauth_error("invalid_request", &format!("the {name} parameter is required")))
}

pub async fn token(
    State(accounts): State<Arc<Accounts>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let body = body.map_err(|r| Problem::bad_request(r.body_text()).into_response())?;
    let request = parse(&headers, &body).map_err(IntoResponse::into_response)?;
    let grant = required(request.grant_type.as_ref(), "grant_type").map_err(IntoResponse::into_response)?;
    let pair = match grant {
        "password" => {
            let username =
                required(request.username.as_ref(), "username").map_err(IntoResponse::into_response)?;
            let password =
                required(request.password.as_ref(), "password").map_err(IntoResponse::into_response)?;
            accounts.password_grant(username, password).await
        }
        "refresh_token" => {
            let token = required(request.refresh_token.as_ref(), "refresh_token")
                .map_err(IntoResponse::into_response)?;
            accounts.refresh_grant(token).await
        }
        _ => {
            return Err(oauth_error(
                "unsupported_grant_type",
                "grant_type must be password or refresh_token",
            )
            .into_response());
        }
    }
    .map_err(|e| ApiError(e).into_response())?;
    let mut response = Json(TokenResponse {
        access_token: pair.access_token,
        token_type: "Bearer",
        expires_in: pair.expires_in,
        refresh_token: pair.refresh_token,
    })
    .into_response();
    // RFC 6749 §5.1: token responses must not be cached.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}
