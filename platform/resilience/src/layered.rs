//! The tower plumbing every layer of this crate shares, written once: a layer's value is the
//! [`Policy`] for one call, and [`Layered`] serves that policy over the service below it.

use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::Service;

use crate::error::ResilienceError;

/// The future every layer returns.
pub type Call<Res, E> = BoxFuture<'static, Result<Res, ResilienceError<E>>>;

/// A service a layer can stand over: it already speaks [`ResilienceError`] and its future can be
/// boxed.
pub trait Below<Req, Res, E>:
    Service<Req, Response = Res, Error = ResilienceError<E>, Future: Send + 'static>
{
}

impl<S, Req, Res, E> Below<Req, Res, E> for S where
    S: Service<Req, Response = Res, Error = ResilienceError<E>, Future: Send + 'static>
{
}

/// What a layer does around one call of the service `S` below it.
pub trait Policy<S, Req, Res, E> {
    /// A policy that calls its own clone of `S` waits per call, where the wait can be bounded and
    /// refused with a reason, so its service is always ready; any other waits for `S`.
    const WAITS_PER_CALL: bool;

    fn call(&self, inner: &mut S, req: Req) -> Call<Res, E>;
}

/// A layer's service: the policy `P` over the service `S`.
#[derive(Debug, Clone)]
pub struct Layered<S, P> {
    inner: S,
    policy: P,
}

impl<S, P> Layered<S, P> {
    pub(crate) fn new(inner: S, policy: P) -> Self {
        Self { inner, policy }
    }
}

impl<S, P, Req, Res, E> Service<Req> for Layered<S, P>
where
    S: Service<Req, Response = Res, Error = ResilienceError<E>>,
    P: Policy<S, Req, Res, E>,
{
    type Response = Res;
    type Error = ResilienceError<E>;
    type Future = Call<Res, E>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if P::WAITS_PER_CALL {
            Poll::Ready(Ok(()))
        } else {
            self.inner.poll_ready(cx)
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.policy.call(&mut self.inner, req)
    }
}
