//! The gateway's own connection handling: its [`Front`] served by a hyper connection
//! builder whose limits are the edge's (`[gateway.edge]`): a deadline for request heads, caps on
//! header count and size, HTTP/2 stream and reset limits, and an idle timeout on request bodies
//! ([`IdleBody`]). A plain server sets none of these, so a client sending its head one byte a
//! minute would hold a connection and a task for ever.
//!
//! hyper itself refuses most smuggling forms at parse time: obsolete line folding, a
//! `Transfer-Encoding` that does not end in `chunked`, conflicting `Content-Length`s and broken
//! chunk framing are `400` with the connection closed. A request with both `Content-Length` and
//! `Transfer-Encoding` it would read as chunked (dropping the `Content-Length`) and then close
//! the connection; [`Framed`](crate::framing::Framed), beneath hyper, makes that a `400` too.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use mercato_runtime::tls::HANDSHAKE_TIMEOUT;
use mercato_runtime::{CancellationToken, HttpConfig, Readiness};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use crate::config::EdgeConfig;
use crate::framing::Framed;
use crate::front::Front;

/// The header count hyper's HTTP/1 parser allows when it is given no other.
const HYPER_MAX_HEADERS: usize = 100;

/// The connection builder with the edge's limits.
fn builder(edge: &EdgeConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(edge.header_read_timeout_ms))
        .max_buf_size(edge.max_header_bytes);
    // hyper parses into a fixed array of its default size unless told a size, and then
    // allocates and fills one of that size for every request head: same limit, more work.
    if edge.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(edge.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(edge.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(edge.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(edge.h2_max_local_error_reset_streams)
        .max_header_list_size(u32::try_from(edge.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves `front` on `listener` until `shutdown`, then as the runtime's server does: readiness
/// reports "stopping", the drain delay passes, the listener closes, and connections get the
/// shutdown grace to finish their requests.
///
/// # Errors
/// Never today: failures to accept one connection are logged and the loop goes on.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    front: Front,
    readiness: Readiness,
    http: &HttpConfig,
    edge: &EdgeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let builder = builder(edge);
    let max_head = edge.max_header_bytes;
    let graceful = GracefulShutdown::new();
    let draining = shutdown.clone();
    let drain_delay = Duration::from_millis(http.drain_delay_ms);
    let stop_accepting = async move {
        draining.cancelled().await;
        readiness.set_stopping();
        tracing::info!(service = crate::NAME, "shutting down: readiness off");
        tokio::time::sleep(drain_delay).await;
    };
    let mut stop_accepting = std::pin::pin!(stop_accepting);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop_accepting => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was accepted: the
                    // listener itself is fine.
                    tracing::warn!(%error, "accepting a connection failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = front.connection(peer);
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            connection.serve(request.map(Body::new))
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        // The handshake runs in the connection's task, so a slow client holds up no other.
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    let stream = TokioIo::new(Framed::new(stream, peer, max_head));
                    let connection = builder.serve_connection_with_upgrades(stream, service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let stream = TokioIo::new(Framed::new(stream, peer, max_head));
                            let connection = builder.serve_connection_with_upgrades(stream, service);
                            watcher.watch(connection.into_owned()).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = Duration::from_millis(http.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            service = crate::NAME,
            "shutdown grace elapsed with requests still running"
        );
    }
    Ok(())
}

/// Why a client's request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the client sent no body data for {0:?}")]
    Idle(Duration),
    #[error("the client's request body is malformed or was cut off: {0}")]
    Broken(#[source] axum::Error),
}

/// A request body that fails when the client leaves it idle too long, and says when a failure
/// is the client's, so the answer is a `4xx` rather than a `502`.
pub struct IdleBody {
    inner: Body,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleBody {
    #[must_use]
    pub fn new(inner: Body, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
        }
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // The timer is made on the first wait only: most bodies are empty or arrive whole.
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                }
                Poll::Ready(frame.map(|f| f.map_err(ClientBodyError::Broken)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(ClientBodyError::Idle(timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
