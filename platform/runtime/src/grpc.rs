//! gRPC between services: a tonic [`Channel`] behind the same [guards](crate::guard) as the HTTP
//! client, and the gRPC answers the server gives without running a handler.
//!
//! [`GuardedChannel`] buffers each request's (unary, bounded) message so that it can be sent
//! again, and sends the caller's remaining time as `x-request-deadline-ms` and `grpc-timeout`.
//! `UNAVAILABLE` answers, connection errors and timeouts are retried when the calls are declared
//! idempotent (reads) or carry an `idempotency-key`; `UNAVAILABLE`, `INTERNAL`, `UNKNOWN` and
//! `DATA_LOSS` count against the target's breaker. The guards' refusals reach the caller as
//! statuses: an open circuit or full bulkhead as `UNAVAILABLE`, a timeout or a passed deadline as
//! `DEADLINE_EXCEEDED`.

use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use http::HeaderValue;
use http_body_util::{BodyExt, Full, Limited};
use mercato_resilience::classify::IDEMPOTENCY_KEY;
use mercato_resilience::retry::Replay;
use mercato_resilience::{CircuitState, Deadline, DeadlineCarrier, ResilienceError};
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::client::ClientError;
use crate::config::ClientConfig;
use crate::guard::{self, ClientMetrics, Guarded, Policy, Target, earliest};
use crate::service_token::{ServiceTokens, TokenHook};

/// The largest request message buffered for retries; tonic's default decoding limit.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The gRPC header that carries the caller's remaining time.
pub const TIMEOUT_HEADER: &str = "grpc-timeout";

/// A call whose message is buffered, so that it can be sent again.
#[derive(Debug)]
struct Buffered {
    request: http::Request<Bytes>,
    /// The caller's deadline, taken when the call was made.
    caller: Option<Deadline>,
}

impl DeadlineCarrier for Buffered {
    fn deadline(&self) -> Option<Deadline> {
        earliest(self.caller, Deadline::current())
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.request.set_deadline(deadline);
        self.request
            .headers_mut()
            .insert(TIMEOUT_HEADER, timeout_value(deadline.remaining()));
    }
}

impl Replay for Buffered {
    fn replay(&self) -> Option<Self> {
        Some(Self {
            request: self.request.replay()?,
            caller: self.caller,
        })
    }
}

type Answer = http::Response<Body>;
type CallResult = Result<Answer, ResilienceError<tonic::transport::Error>>;

/// The status of a trailers-only answer (how servers answer an error), if it is one.
fn answer_code(answer: &Answer) -> Option<Code> {
    answer
        .headers()
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

fn reads(_: &Buffered) -> bool {
    true
}

fn keyed(call: &Buffered) -> bool {
    call.request.headers().contains_key(IDEMPOTENCY_KEY)
}

fn transient(result: &CallResult) -> bool {
    match result {
        Ok(answer) => {
            matches!(answer.status().as_u16(), 502..=504) || answer_code(answer) == Some(Code::Unavailable)
        }
        // A connection error: the request was retryable (checked first), so it may be repeated.
        Err(error) => error.is_transient_by(|_| true),
    }
}

fn failure(result: &CallResult) -> bool {
    match result {
        Ok(answer) => {
            answer.status().is_server_error()
                || matches!(
                    answer_code(answer),
                    Some(Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss)
                )
        }
        Err(_) => true,
    }
}

/// `grpc-timeout` for `left`: at most eight digits, so long waits are sent in seconds.
fn timeout_value(left: Duration) -> HeaderValue {
    let millis = left.as_millis();
    let text = if millis <= 99_999_999 {
        format!("{millis}m")
    } else {
        format!("{}S", left.as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&text).expect("digits and a unit are a valid header value")
}

/// Sends one attempt on the channel.
#[derive(Debug, Clone)]
struct Transport {
    channel: Channel,
    timeout: Duration,
}

impl tower::Service<Buffered> for Transport {
    type Response = Answer;
    type Error = ResilienceError<tonic::transport::Error>;
    type Future = BoxFuture<'static, CallResult>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Buffered) -> Self::Future {
        let Buffered { request, caller } = call;
        let (parts, message) = request.into_parts();
        let request = http::Request::from_parts(parts, Body::new(Full::new(message)));
        let answer = self.channel.clone().oneshot(request);
        let timeout = self.timeout;
        async move {
            // The channel itself enforces `grpc-timeout`, at the same instant as the guards.
            answer.await.map_err(|error| match caller {
                _ if !timed_out(&error) => ResilienceError::Inner(error),
                Some(deadline) if deadline.is_expired() => ResilienceError::DeadlineExceeded,
                _ => ResilienceError::TimedOut(timeout),
            })
        }
        .boxed()
    }
}

fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Whether every call on a channel may be sent twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// Reads: any call may be retried.
    Idempotent,
    /// Only calls carrying an `idempotency-key` may be retried.
    KeyedOnly,
}

/// A channel to one service, guarded; give it to a tonic client (`FooClient::new(channel)`).
#[derive(Clone)]
pub struct GuardedChannel {
    guarded: Guarded<Buffered, Answer, tonic::transport::Error>,
    target: Target,
    tokens: Option<TokenHook>,
}

impl std::fmt::Debug for GuardedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedChannel")
            .field("target", &self.target.name())
            .finish_non_exhaustive()
    }
}

impl GuardedChannel {
    /// `channel` to `target` (the name in metrics and logs), guarded with `config`'s settings;
    /// each attempt is limited to `config.timeout_ms` and the caller's deadline.
    ///
    /// # Errors
    /// An invalid setting.
    pub fn new(
        target: &str,
        channel: Channel,
        calls: Calls,
        config: &ClientConfig,
        metrics: &ClientMetrics,
    ) -> Result<Self, ClientError> {
        crate::settings::Validate::validate(config)?;
        let policy = Policy {
            retryable: match calls {
                Calls::Idempotent => reads,
                Calls::KeyedOnly => keyed,
            },
            transient,
            failure,
        };
        let transport = Transport {
            channel,
            timeout: config.timeout(),
        };
        let (guarded, target) = guard::guard(target, config, metrics, policy, transport)?;
        Ok(Self {
            guarded,
            target,
            tokens: None,
        })
    }

    /// This channel, with every call carrying a service token for `audience` (the callee; see
    /// [`crate::service_token`]).
    #[must_use]
    pub fn with_service_token(self, tokens: ServiceTokens, audience: &str) -> Self {
        Self {
            tokens: Some(TokenHook::new(tokens, audience)),
            ..self
        }
    }

    /// The state of this target's circuit breaker.
    #[must_use]
    pub fn breaker_state(&self) -> CircuitState {
        self.target.breaker_state()
    }
}

fn status(error: ResilienceError<tonic::transport::Error>) -> Status {
    match error {
        ResilienceError::Inner(error) => Status::from_error(Box::new(error)),
        ResilienceError::BudgetExhausted { last, .. } => status(*last),
        ResilienceError::TimedOut(_) | ResilienceError::DeadlineExceeded => {
            Status::deadline_exceeded(error.to_string())
        }
        ResilienceError::CircuitOpen { .. } | ResilienceError::BulkheadFull { .. } => {
            Status::unavailable(error.to_string())
        }
    }
}

impl tower::Service<http::Request<Body>> for GuardedChannel {
    type Response = Answer;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Answer, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let guarded = self.guarded.clone();
        let target = self.target.clone();
        let tokens = self.tokens.clone();
        let caller = Deadline::current();
        let span = crate::trace::client_span(target.name(), request.uri().path());
        let (mut parts, body) = request.into_parts();
        crate::trace::context::inject(&span, &mut parts.headers);
        async move {
            if let Some(tokens) = tokens {
                let value = tokens.authorization().await.map_err(|error| {
                    if crate::failure::Transient::is_transient(&error) {
                        Status::unavailable(error.to_string())
                    } else {
                        Status::unauthenticated(error.to_string())
                    }
                })?;
                parts.headers.insert(http::header::AUTHORIZATION, value);
            }
            let message = Limited::new(body, MAX_REQUEST_BYTES)
                .collect()
                .await
                .map_err(|e| Status::resource_exhausted(format!("request message not buffered: {e}")))?
                .to_bytes();
            let call = Buffered {
                request: http::Request::from_parts(parts, message),
                caller,
            };
            let result = guarded.oneshot(call).await;
            target.record(&result, failure);
            result.map_err(status)
        }
        .instrument(span)
        .boxed()
    }
}

/// Whether a request is a gRPC call, which must be answered with a gRPC status.
#[must_use]
pub fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The caller's remaining time from `grpc-timeout` (`1..=8` digits and a unit), if present and
/// well formed.
#[must_use]
pub fn deadline_from_timeout(headers: &http::HeaderMap) -> Option<Deadline> {
    let value = headers.get(TIMEOUT_HEADER)?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let left = match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    Some(Deadline::after(left))
}

/// A gRPC answer carrying only `status` (HTTP 200, the status in the headers).
#[must_use]
pub fn status_answer(status: Status) -> Response {
    let (parts, body) = status.into_http::<Body>().into_parts();
    Response::from_parts(parts, axum::body::Body::new(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(timeout: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(TIMEOUT_HEADER, HeaderValue::from_str(timeout).unwrap());
        headers
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_timeouts_round_trip_and_malformed_ones_are_ignored() {
        let sent = timeout_value(Duration::from_millis(1_500));
        assert_eq!(sent, "1500m");
        let deadline = deadline_from_timeout(&headers(sent.to_str().unwrap())).unwrap();
        assert_eq!(deadline.remaining(), Duration::from_millis(1_500));
        assert_eq!(
            deadline_from_timeout(&headers("2S")).unwrap().remaining(),
            Duration::from_secs(2)
        );
        assert_eq!(timeout_value(Duration::from_secs(200_000)), "200000S");
        for bad in ["", "m", "123456789m", "5x", "-1m", "1.5S"] {
            assert!(deadline_from_timeout(&headers(bad)).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_status_answer_is_trailers_only_with_the_code_in_its_headers() {
        let answer = status_answer(Status::deadline_exceeded("too late"));
        assert_eq!(answer.status(), http::StatusCode::OK);
        assert_eq!(answer.headers()["grpc-status"], "4");
        assert_eq!(answer.headers()[http::header::CONTENT_TYPE], "application/grpc");
    }
}
