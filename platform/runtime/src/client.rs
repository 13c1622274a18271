//! The HTTP client services use to call each other, or an outside provider.
//!
//! Every call passes the [guards](crate::guard) of its target: retries with jittered backoff under
//! a budget, only for idempotent methods or requests carrying an `Idempotency-Key`, and only while
//! the body can be sent again; a circuit breaker that fails fast while the target is failing; a
//! per-attempt timeout that never runs past the caller's [`Deadline`] (the current request's, from
//! its `x-request-deadline-ms`), whose remaining milliseconds travel on as `x-request-deadline-ms`;
//! and a bulkhead. The current request's correlation id travels on every call too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use mercato_resilience::classify::IDEMPOTENCY_KEY;
use mercato_resilience::deadline::HEADER as DEADLINE_HEADER;
use mercato_resilience::retry::Replay;
use mercato_resilience::{CircuitState, Deadline, DeadlineCarrier, ResilienceError};
use tower::ServiceExt as _;

use crate::config::ClientConfig;
use crate::correlation::{CorrelationId, HEADER};
use crate::guard::{self, ClientMetrics, Guarded, Policy, Target, earliest};
use crate::service_token::{ServiceTokenError, ServiceTokens, TokenHook};
use tracing::Instrument as _;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid base url {0:?}: it must start with http:// or https://")]
    BaseUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// A `[client]` setting the guards refuse; its key is relative to the section.
    #[error("invalid client setting {0}")]
    Setting(#[from] crate::settings::InvalidSetting),
}

/// Why a call produced no answer: the transport's error, or the guard that refused or cut it
/// (an open circuit or full bulkhead says so at once; [`ResilienceError::retry_after`] says when
/// to come back).
pub type CallError = ResilienceError<reqwest::Error>;

type CallResult = Result<reqwest::Response, CallError>;

/// A request on its way through the guards.
#[derive(Debug)]
pub struct Outgoing {
    request: reqwest::Request,
    /// The caller's deadline, taken when the call was made.
    caller: Option<Deadline>,
    /// This attempt's deadline, set by the timeout: the caller's or the attempt's own, if sooner.
    attempt: Option<Deadline>,
}

impl DeadlineCarrier for Outgoing {
    fn deadline(&self) -> Option<Deadline> {
        earliest(self.caller, Deadline::current())
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.request
            .headers_mut()
            .insert(DEADLINE_HEADER, deadline.header_value());
        self.attempt = Some(deadline);
    }
}

impl Replay for Outgoing {
    /// `None` for a streaming body, which cannot be sent twice.
    fn replay(&self) -> Option<Self> {
        Some(Self {
            request: self.request.try_clone()?,
            caller: self.caller,
            attempt: None,
        })
    }
}

fn retryable(outgoing: &Outgoing) -> bool {
    outgoing.request.method().is_idempotent() || outgoing.request.headers().contains_key(IDEMPOTENCY_KEY)
}

/// `502`/`503`/`504`, refused connections and timeouts.
fn transient(result: &CallResult) -> bool {
    match result {
        Ok(response) => matches!(response.status().as_u16(), 502..=504),
        Err(error) => error.is_transient_by(reqwest::Error::is_connect),
    }
}

/// `5xx` and every failure to get an answer, except a request we could not even build.
fn failure(result: &CallResult) -> bool {
    match result {
        Ok(response) => response.status().is_server_error(),
        Err(ResilienceError::Inner(error)) => !error.is_builder(),
        Err(_) => true,
    }
}

/// Sends one attempt with reqwest, bounded (body included) by the attempt's deadline.
#[derive(Debug, Clone)]
struct Transport {
    http: reqwest::Client,
    timeout: Duration,
}

impl tower::Service<Outgoing> for Transport {
    type Response = reqwest::Response;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = CallResult> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut outgoing: Outgoing) -> Self::Future {
        // The timeout layer only waits for the response head; reqwest's own limit also covers
        // reading the body, so the caller never reads past its deadline either.
        if let Some(deadline) = outgoing.attempt {
            *outgoing.request.timeout_mut() = Some(deadline.remaining());
        }
        // Not `deadline()`: inside the timeout, the current deadline is the attempt's own.
        let caller = outgoing.caller;
        let timeout = self.timeout;
        let response = self.http.execute(outgoing.request);
        Box::pin(async move {
            response.await.map_err(|error| match caller {
                _ if !error.is_timeout() => ResilienceError::Inner(error),
                Some(deadline) if deadline.is_expired() => ResilienceError::DeadlineExceeded,
                _ => ResilienceError::TimedOut(timeout),
            })
        })
    }
}

/// A client for one other service (or provider), with its own breaker, retry budget and bulkhead.
#[derive(Clone)]
pub struct ServiceClient {
    base_url: String,
    http: reqwest::Client,
    guarded: Guarded<Outgoing, reqwest::Response, reqwest::Error>,
    target: Target,
    tokens: Option<TokenHook>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("target", &self.target.name())
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client for `target` (the name in metrics and logs) at `base_url`.
    ///
    /// # Errors
    /// A base URL that is not HTTP, an invalid setting, or a client that cannot be built.
    pub fn new(
        target: &str,
        base_url: &str,
        config: &ClientConfig,
        metrics: &ClientMetrics,
    ) -> Result<Self, ClientError> {
        Self::build(target, base_url, config, metrics, reqwest::Client::builder())
    }

    /// As [`new`](Self::new), over mutual TLS: `tls` presents this process's certificate and
    /// accepts only the target's ([`crate::tls::client_for`]).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_tls(
        target: &str,
        base_url: &str,
        config: &ClientConfig,
        metrics: &ClientMetrics,
        tls: &rustls::ClientConfig,
    ) -> Result<Self, ClientError> {
        let builder = crate::tls::reqwest_builder(reqwest::Client::builder(), tls);
        Self::build(target, base_url, config, metrics, builder)
    }

    fn build(
        target: &str,
        base_url: &str,
        config: &ClientConfig,
        metrics: &ClientMetrics,
        builder: reqwest::ClientBuilder,
    ) -> Result<Self, ClientError> {
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ClientError::BaseUrl(base_url.to_owned()));
        }
        crate::settings::Validate::validate(config)?;
        let http = builder
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            .build()
            .map_err(ClientError::Build)?;
        let transport = Transport {
            http: http.clone(),
            timeout: config.timeout(),
        };
        let policy = Policy {
            retryable,
            transient,
            failure,
        };
        let (guarded, target) = guard::guard(target, config, metrics, policy, transport)?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
            guarded,
            target,
            tokens: None,
        })
    }

    /// Sends a service token for `audience` on every call (see [`crate::service_token`]).
    #[must_use]
    pub fn with_service_token(mut self, tokens: ServiceTokens, audience: &str) -> Self {
        self.tokens = Some(TokenHook::new(tokens, audience));
        self
    }

    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The state of this target's circuit breaker.
    #[must_use]
    pub fn breaker_state(&self) -> CircuitState {
        self.target.breaker_state()
    }

    /// A request to `path` on the service, carrying the current correlation id.
    pub fn request(&self, method: reqwest::Method, path: &str) -> ServiceRequest<'_> {
        let builder = self.http.request(method, format!("{}{path}", self.base_url));
        let builder = match CorrelationId::current() {
            Some(id) => builder.header(HEADER, id.as_str()),
            None => builder,
        };
        ServiceRequest {
            client: self,
            builder,
        }
    }

    pub fn get(&self, path: &str) -> ServiceRequest<'_> {
        self.request(reqwest::Method::GET, path)
    }

    pub fn post(&self, path: &str) -> ServiceRequest<'_> {
        self.request(reqwest::Method::POST, path)
    }
}

/// A request being built; [`send`](Self::send) passes it through the target's guards.
#[must_use = "a request does nothing until it is sent"]
#[derive(Debug)]
pub struct ServiceRequest<'a> {
    client: &'a ServiceClient,
    builder: reqwest::RequestBuilder,
}

impl ServiceRequest<'_> {
    /// Changes the underlying request (headers, body, query) with reqwest's builder.
    pub fn with(mut self, change: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Self {
        self.builder = change(self.builder);
        self
    }

    pub fn header(self, name: &str, value: &str) -> Self {
        self.with(|b| b.header(name, value))
    }

    /// Makes a non-idempotent request safe to retry: the target acts on a key once.
    pub fn idempotency_key(self, key: &str) -> Self {
        self.header(IDEMPOTENCY_KEY, key)
    }

    pub fn json<T: serde::Serialize + ?Sized>(self, body: &T) -> Self {
        self.with(|b| b.json(body))
    }

    /// Sends the request through the guards. An answer of any status is `Ok`; the response
    /// body, when read, is still bounded by the deadline.
    ///
    /// # Errors
    /// No answer: see [`CallError`].
    pub async fn send(self) -> CallResult {
        let Self { client, mut builder } = self;
        if let Some(tokens) = &client.tokens {
            match tokens.authorization().await {
                Ok(value) => builder = builder.header(http::header::AUTHORIZATION, value),
                Err(ServiceTokenError::Transport(error)) => return Err(ResilienceError::Inner(error)),
                // Sent without a token, the callee's 401 tells the caller what is wrong.
                Err(error) => tracing::error!(%error, target = client.target.name(), "no service token"),
            }
        }
        let result = match builder.build() {
            Ok(mut request) => {
                let span = crate::trace::client_span(client.target.name(), request.method().as_str());
                crate::trace::context::inject(&span, request.headers_mut());
                let outgoing = Outgoing {
                    request,
                    caller: Deadline::current(),
                    attempt: None,
                };
                client.guarded.clone().oneshot(outgoing).instrument(span).await
            }
            Err(error) => Err(ResilienceError::Inner(error)),
        };
        client.target.record(&result, failure);
        result
    }
}
