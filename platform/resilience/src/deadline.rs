//! Deadline propagation: the instant by which the original caller stops waiting.
//!
//! A [`Deadline`] travels in a request's extensions and in a task-local while a request is being
//! handled, and crosses the wire as `x-request-deadline-ms`: the milliseconds left, not a wall-clock
//! time, so that clock skew between hosts cannot stretch or shrink it.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;
use tower::{Layer, Service};

/// The header that carries the remaining milliseconds.
pub const HEADER: &str = "x-request-deadline-ms";

/// [`HEADER`] as a header name: a string is parsed into a name again on every use.
const NAME: http::HeaderName = http::HeaderName::from_static(HEADER);

tokio::task_local! {
    static CURRENT: Deadline;
}

/// The instant after which nobody is waiting for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    #[must_use]
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The deadline `budget` from now.
    #[must_use]
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    #[must_use]
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left, zero once passed.
    #[must_use]
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    #[must_use]
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.0
    }

    /// The remaining time as a header value, rounded down so the callee gives up no later than we do.
    #[must_use]
    pub fn header_value(self) -> HeaderValue {
        let ms = u64::try_from(self.remaining().as_millis()).unwrap_or(u64::MAX);
        HeaderValue::from(ms)
    }

    /// The deadline a caller sent in `x-request-deadline-ms`, if the header is a number of
    /// milliseconds; anything else is ignored rather than trusted.
    #[must_use]
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let ms: u64 = headers.get(NAME)?.to_str().ok()?.trim().parse().ok()?;
        Instant::now().checked_add(Duration::from_millis(ms)).map(Self)
    }

    /// Runs `fut` with this deadline as the current one.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// Runs `f` with this deadline as the current one; for the synchronous part of a `call`.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }

    /// The deadline of the request this task is handling, if any.
    #[must_use]
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|d| *d).ok()
    }
}

/// A request that can carry a deadline. The default methods use only the task-local, so any
/// request type can opt in with an empty `impl`.
pub trait DeadlineCarrier {
    /// The earliest deadline this request is bound by.
    fn deadline(&self) -> Option<Deadline> {
        Deadline::current()
    }

    /// Records the deadline on the outgoing request (for HTTP: extension and header).
    fn set_deadline(&mut self, _deadline: Deadline) {}
}

impl<B> DeadlineCarrier for http::Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        let own = self.extensions().get::<Deadline>().copied();
        match (own, Deadline::current()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.headers_mut().insert(NAME, deadline.header_value());
        self.extensions_mut().insert(deadline);
    }
}

/// Server side: turns an incoming `x-request-deadline-ms` into the request's [`Deadline`] (an
/// extension and the task-local while the request is handled), capped at `max` so that a client
/// cannot ask us to hold work open longer than we allow.
#[derive(Debug, Clone, Copy)]
pub struct AcceptDeadlineLayer {
    max: Duration,
}

impl AcceptDeadlineLayer {
    #[must_use]
    pub fn new(max: Duration) -> Self {
        Self { max }
    }
}

impl<S> Layer<S> for AcceptDeadlineLayer {
    type Service = AcceptDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AcceptDeadline { inner, max: self.max }
    }
}

/// See [`AcceptDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct AcceptDeadline<S> {
    inner: S,
    max: Duration,
}

impl<S, B> Service<http::Request<B>> for AcceptDeadline<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(sent) = Deadline::from_headers(req.headers()) else {
            return self.inner.call(req).boxed();
        };
        let deadline = sent.min(Deadline::after(self.max));
        req.extensions_mut().insert(deadline);
        let fut = deadline.sync_scope(|| self.inner.call(req));
        deadline.scope(fut).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn header_round_trips_remaining_milliseconds() {
        let deadline = Deadline::after(Duration::from_millis(250));
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, deadline.header_value());
        assert_eq!(headers[HEADER], "250");
        assert_eq!(Deadline::from_headers(&headers), Some(deadline));
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_headers_are_ignored() {
        for bad in ["", "-5", "soon", "1.5"] {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER, HeaderValue::from_static(bad));
            assert_eq!(Deadline::from_headers(&headers), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_bound_by_the_earlier_of_its_own_and_the_task_deadline() {
        let early = Deadline::after(Duration::from_millis(10));
        let late = Deadline::after(Duration::from_secs(10));
        let mut req = http::Request::new(());
        req.extensions_mut().insert(late);
        assert_eq!(early.scope(async { req.deadline() }).await, Some(early));
        assert_eq!(req.deadline(), Some(late));
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_is_zero_once_passed() {
        let deadline = Deadline::after(Duration::from_millis(5));
        tokio::time::advance(Duration::from_millis(6)).await;
        assert!(deadline.is_expired());
        assert_eq!(deadline.remaining(), Duration::ZERO);
        assert_eq!(deadline.header_value(), "0");
    }
}
