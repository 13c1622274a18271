//! `POST /api/identity/token`, in the OAuth 2 style: form-encoded (or JSON) grants.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use mercato_runtime::{Json, Problem};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

use super::ApiError;
use super::error::{grant_error, oauth_error};
use crate::accounts::Accounts;
use crate::service_grant::{ClientCredentials, ServiceGrant};

/// `username` and `password` for the password grant, `refresh_token` for the other; each
/// non-empty (its schema says so by grant, by hand: the derive cannot state a `oneOf` on a field).
#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    // client_credentials, between services (not in the public document: services call identity
    // directly).
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    audience: Option<String>,
    resource: Option<String>,
}

#[derive(Debug, Serialize)]
struct ServiceTokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct TokenResponse {
    access_token: String,
    #[schema(value_type = String, pattern = "^Bearer$")]
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
}

impl utoipa::PartialSchema for TokenRequest {
    fn schema() -> RefOr<Schema> {
        let grant = |name: &str, needs: &[&str]| {
            let mut object = ObjectBuilder::new()
                .property(
                    "grant_type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([name])),
                )
                .required("grant_type");
            for field in ["username", "password", "refresh_token"] {
                let mut property = ObjectBuilder::new().schema_type(Type::String);
                if needs.contains(&field) {
                    property = property.min_length(Some(1));
                    object = object.required(field);
                }
                object = object.property(field, property);
            }
            object
        };
        OneOfBuilder::new()
            .item(grant("password", &["username", "password"]))
            .item(grant("refresh_token", &["refresh_token"]))
            .into()
    }
}

impl ToSchema for TokenRequest {}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, Problem> {
    parse_as(headers, body)
}

/// A form-encoded or JSON body, as OAuth 2 endpoints take them.
fn parse_as<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Problem> {
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

#[utoipa::path(
    post,
    path = "/api/identity/token",
    operation_id = "token",
    tag = "identity",
    summary = "Tokens, by the OAuth 2 password or refresh_token grant",
    request_body(content(
        (TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "An access token and a refresh token", body = TokenResponse,
            headers(("Cache-Control" = String), ("Pragma" = String))),
        (status = 400, description = "An OAuth 2 error: `error` is invalid_request, invalid_grant or unsupported_grant_type"),
    )
)]
pub async fn token(
    State(accounts): State<Arc<Accounts>>,
    Extension(services): Extension<Arc<ServiceGrant>>,
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
        "client_credentials" => return service_token(&services, &request).await,
        _ => {
            return Err(oauth_error(
                "unsupported_grant_type",
                "grant_type must be password, refresh_token or client_credentials",
            )
            .into_response());
        }
    }
    .map_err(|e| ApiError(e).into_response())?;
    Ok(no_store(
        Json(TokenResponse {
            access_token: pair.access_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token,
        })
        .into_response(),
    ))
}

/// The body of a revocation request; a `token_type_hint` is accepted and not needed: only
/// refresh tokens are revocable, access tokens end with their short lifetime.
#[derive(Debug, Default, Deserialize, ToSchema)]
struct RevokeRequest {
    /// The refresh token to revoke.
    #[schema(min_length = 1)]
    token: String,
}

#[utoipa::path(
    post,
    path = "/api/identity/revoke",
    operation_id = "revoke",
    tag = "identity",
    summary = "Revokes a refresh token and every token rotated from the same sign-in (RFC 7009)",
    request_body(content(
        (RevokeRequest = "application/x-www-form-urlencoded"),
        (RevokeRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "Revoked, or not a token identity knows: the answer is the same"),
        (status = 400, description = "An OAuth 2 error: `error` is invalid_request"),
    )
)]
pub async fn revoke(
    State(accounts): State<Arc<Accounts>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let body = body.map_err(|r| Problem::bad_request(r.body_text()).into_response())?;
    let request: RevokeRequest = parse_as(&headers, &body).map_err(IntoResponse::into_response)?;
    let token = required(Some(&request.token), "token").map_err(IntoResponse::into_response)?;
    accounts
        .revoke(token)
        .await
        .map_err(|e| ApiError(e).into_response())?;
    Ok(no_store(http::StatusCode::OK.into_response()))
}

async fn service_token(services: &ServiceGrant, request: &TokenRequest) -> Result<Response, Response> {
    let credentials = ClientCredentials {
        client_id: request.client_id.as_deref(),
        client_secret: request.client_secret.as_deref(),
        assertion_type: request.client_assertion_type.as_deref(),
        assertion: request.client_assertion.as_deref(),
        audience: request.audience.as_deref().or(request.resource.as_deref()),
    };
    let token = services
        .grant(&credentials)
        .await
        .map_err(|e| grant_error(&e).into_response())?;
    Ok(no_store(
        Json(ServiceTokenResponse {
            access_token: token.access_token,
            token_type: "Bearer",
            expires_in: token.expires_in,
        })
        .into_response(),
    ))
}

/// RFC 6749 §5.1: token responses must not be cached.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
