//! Service tokens on both ends of an internal call.
//!
//! The caller's side, [`ServiceTokens`]: a token per callee from identity's token endpoint
//! (`client_credentials`, authenticated with the service's own key or secret), kept until it is
//! near its end and then refreshed. One fetch per callee at a time: callers arriving while a
//! token is being fetched wait for that fetch; while a still-valid token is being refreshed they
//! keep using it, so a refresh never stalls calls and never sends a crowd to identity. The
//! clients take it through [`TokenHook`] (`ServiceClient::with_service_token`,
//! `GuardedChannel::with_service_token`).
//!
//! The callee's side, [`require`]: internal routes refuse a call whose bearer token is not a
//! service token for this service (missing, expired, another audience or issuer, an unknown key,
//! or a customer's token), with `UNAUTHENTICATED` for gRPC and `401` otherwise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use mercato_security::service_token::{ASSERTION_TYPE, ClientCredential, sign_assertion};
use mercato_security::{TokenError, Verifier};
use serde::Deserialize;

use crate::auth::{bearer_token, token_problem};
use crate::grpc::{is_grpc, status_answer};

/// How long an assertion this service signs stays valid: one request's worth.
const ASSERTION_SECS: u64 = 60;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum ServiceTokenError {
    /// Identity could not be reached or did not answer in time.
    #[error("the token endpoint could not be reached: {0}")]
    Transport(#[source] reqwest::Error),
    /// Identity answered with a refusal (this service's credential or its request is wrong).
    #[error("the token endpoint refused: {status} {error}")]
    Refused { status: u16, error: String },
    #[error("the token endpoint's answer is not a token: {0}")]
    Answer(String),
    #[error("the client assertion could not be signed: {0}")]
    Signing(#[from] TokenError),
}

impl crate::failure::Transient for ServiceTokenError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Refused { status, .. } => *status >= 500,
            Self::Answer(_) | Self::Signing(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Held {
    token: HeaderValue,
    refresh_at: Instant,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Slot {
    held: RwLock<Option<Held>>,
    /// Held by the one fetch under way for this callee.
    fetching: tokio::sync::Mutex<()>,
}

impl Slot {
    fn held(&self) -> Option<Held> {
        self.held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn keep(&self, held: Held) {
        *self
            .held
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(held);
    }
}

struct Inner {
    client_id: String,
    token_url: String,
    /// Identity's issuer: the audience of this service's assertions.
    issuer: String,
    credential: ClientCredential,
    http: reqwest::Client,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    fetches: AtomicU64,
}

/// This service's tokens for the services it calls; clones share them.
#[derive(Clone)]
pub struct ServiceTokens {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTokens")
            .field("client_id", &self.inner.client_id)
            .field("token_url", &self.inner.token_url)
            .field("credential", &self.inner.credential)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct RefusalAnswer {
    #[serde(default)]
    error: String,
}

impl ServiceTokens {
    /// Tokens for `client_id` from `token_url`, whose issuer is `issuer`; `http` is the client
    /// that reaches identity (bounded by its own timeouts).
    #[must_use]
    pub fn new(
        client_id: &str,
        token_url: &str,
        issuer: &str,
        credential: ClientCredential,
        http: reqwest::Client,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client_id: client_id.to_owned(),
                token_url: token_url.to_owned(),
                issuer: issuer.to_owned(),
                credential,
                http,
                slots: Mutex::default(),
                fetches: AtomicU64::new(0),
            }),
        }
    }

    /// How many times a token was asked of identity (the cache's effect, in tests and metrics).
    #[must_use]
    pub fn fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    fn slot(&self, audience: &str) -> Arc<Slot> {
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(slots.entry(audience.to_owned()).or_default())
    }

    /// `Bearer <token>` for calls to `audience`.
    ///
    /// # Errors
    /// No valid token is held and none could be fetched.
    pub async fn authorization(&self, audience: &str) -> Result<HeaderValue, ServiceTokenError> {
        let slot = self.slot(audience);
        if let Some(held) = slot.held() {
            let now = Instant::now();
            if now < held.refresh_at {
                return Ok(held.token);
            }
            if now < held.expires {
                // Near its end: one caller refreshes, the others keep the token meanwhile.
                let Ok(_fetching) = slot.fetching.try_lock() else {
                    return Ok(held.token);
                };
                return match self.fetch(audience).await {
                    Ok(fresh) => {
                        slot.keep(fresh.clone());
                        Ok(fresh.token)
                    }
                    Err(error) => {
                        tracing::warn!(%error, audience, "cannot refresh a service token; using the current one");
                        Ok(held.token)
                    }
                };
            }
        }
        let _fetching = slot.fetching.lock().await;
        // Whoever held the lock before may have fetched the token this caller needs.
        if let Some(held) = slot.held()
            && Instant::now() < held.refresh_at
        {
            return Ok(held.token);
        }
        let fresh = self.fetch(audience).await?;
        slot.keep(fresh.clone());
        Ok(fresh.token)
    }

    async fn fetch(&self, audience: &str) -> Result<Held, ServiceTokenError> {
        let inner = &self.inner;
        inner.fetches.fetch_add(1, Ordering::Relaxed);
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("audience", audience.to_owned()),
            ("client_id", inner.client_id.clone()),
        ];
        match &inner.credential {
            ClientCredential::Key(key) => {
                let now = jsonwebtoken_now();
                let jti = uuid::Uuid::new_v4().to_string();
                let assertion =
                    sign_assertion(&inner.client_id, &inner.issuer, key, now, ASSERTION_SECS, &jti)?;
                form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", assertion));
            }
            ClientCredential::Secret(secret) => form.push(("client_secret", secret.clone())),
        }
        let body =
            serde_urlencoded::to_string(&form).map_err(|e| ServiceTokenError::Answer(e.to_string()))?;
        let asked = Instant::now();
        let response = inner
            .http
            .post(&inner.token_url)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(ServiceTokenError::Transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(ServiceTokenError::Transport)?;
        if !status.is_success() {
            let refusal: RefusalAnswer = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(ServiceTokenError::Refused {
                status: status.as_u16(),
                error: refusal.error,
            });
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&bytes).map_err(|e| ServiceTokenError::Answer(e.to_string()))?;
        let mut token = HeaderValue::try_from(format!("Bearer {}", answer.access_token))
            .map_err(|e| ServiceTokenError::Answer(e.to_string()))?;
        token.set_sensitive(true);
        // Timed from the request, so the time it took counts against the token's life.
        let life = Duration::from_secs(answer.expires_in);
        Ok(Held {
            token,
            refresh_at: asked + life.mul_f64(0.8),
            // A margin for clocks and the call's own flight: a tenth of the life, at most 5 s.
            expires: asked + life.saturating_sub((life / 10).min(Duration::from_secs(5))),
        })
    }
}

fn jsonwebtoken_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a client needs to send a service token on each call: the tokens and the callee.
#[derive(Debug, Clone)]
pub struct TokenHook {
    tokens: ServiceTokens,
    audience: Arc<str>,
}

impl TokenHook {
    #[must_use]
    pub fn new(tokens: ServiceTokens, audience: &str) -> Self {
        Self {
            tokens,
            audience: audience.into(),
        }
    }

    /// The `Authorization` value for the next call.
    ///
    /// # Errors
    /// See [`ServiceTokens::authorization`].
    pub async fn authorization(&self) -> Result<HeaderValue, ServiceTokenError> {
        self.tokens.authorization(&self.audience).await
    }
}

/// The service that made an internal call, from its verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCaller(pub String);

/// Middleware for internal routes: see the module docs. `verifier` verifies service tokens
/// whose audience is this service (`Verifier::for_service_tokens`).
pub async fn require(State(verifier): State<Verifier>, mut request: Request, next: Next) -> Response {
    let grpc = is_grpc(&request);
    let refuse = |problem: crate::Problem, why: String| {
        if grpc {
            if problem.status().is_server_error() {
                status_answer(tonic::Status::unavailable(why))
            } else {
                status_answer(tonic::Status::unauthenticated(why))
            }
        } else {
            problem.into_response()
        }
    };
    let token = match bearer_token(request.headers()) {
        Ok(Some(token)) => token,
        Ok(None) => {
            let why = "this internal API needs a service token".to_owned();
            return refuse(crate::Problem::unauthorized(why.clone(), false), why);
        }
        Err(problem) => return refuse(problem, "use the Bearer authentication scheme".to_owned()),
    };
    match verifier.verify(token).await {
        Ok(claims) => {
            request.extensions_mut().insert(ServiceCaller(claims.sub));
            next.run(request).await
        }
        Err(error) => refuse(token_problem(&error), error.to_string()),
    }
}

/// `routes` behind [`require`].
pub fn internal(routes: axum::Router, verifier: Verifier) -> axum::Router {
    routes.layer(axum::middleware::from_fn_with_state(verifier, require))
}
