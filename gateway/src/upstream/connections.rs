//! An instance's HTTP/1.1 connections, each driven by the request that holds it.
//!
//! hyper's pooled client runs every upstream connection as a task of its own: a request crosses
//! from the task serving the client to the connection's task, and the answer crosses back, two
//! wake-ups (and on a busy machine two context switches) per request. Here the task serving the
//! client drives the connection it took, while the request goes out and the answer's head comes
//! back ([`Connections::send`]) and then while the answer's body streams ([`UpstreamBody`]), so a
//! request is one task from the client's socket to the upstream's and back.
//!
//! A connection whose answer was read to its end goes back to the instance's idle list (at most
//! `pool_max_idle_per_host`, each for at most the client's `pool_idle_timeout_ms`); one whose
//! answer was abandoned midway is closed, as its remaining bytes would be read as the next
//! answer. An idle connection is checked when it is taken: one the upstream closed meanwhile is
//! dropped, and a request that a reused connection could not send is sent once more on a new one.
//!
//! An `https://` instance is reached over mutual TLS: the gateway presents its certificate and
//! accepts only the service the upstream is named after ([`mercato_runtime::tls::client_for`]).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Uri, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How connections are opened and kept.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: Arc<str>,
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed: the connection broke, the answer was not HTTP, or the request's own
    /// body failed (then [`hyper::Error::is_user`] holds and the body's error is the source).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// How an `https://` instance is reached: the TLS configuration for its service, and the name
/// the handshake is addressed to.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl UpstreamTls {
    /// TLS with `config` (an HTTP/1.1 client's) to the host of `uri`.
    ///
    /// # Errors
    /// A description when the host is not a server name.
    pub fn new(config: &rustls::ClientConfig, uri: &Uri) -> Result<Self, String> {
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let name = ServerName::try_from(host).map_err(|_| format!("{uri}: the host is not a server name"))?;
        let mut config = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// A connection's transport: TCP, or TLS over it.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

type Driver = http1::Connection<TokioIo<Io>, Body>;

struct Connection {
    sender: http1::SendRequest<Body>,
    /// `None` once the connection has ended: a finished future is not polled again. Boxed once
    /// per connection, so that moving a connection (to a request, back to the idle list) is cheap.
    driver: Option<Box<Driver>>,
}

impl Connection {
    /// Lets the connection read and write what it can; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(driver) = &mut self.driver
            && Pin::new(&mut **driver).poll(cx).is_ready()
        {
            self.driver = None;
        }
        self.driver.is_some()
    }

    /// Whether the connection can take a request now. Driven once without a waker first, so
    /// that a close or stray bytes from the upstream while it idled end it here.
    fn ready_for_reuse(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop())) && self.sender.is_ready()
    }
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// One instance's idle connections and where to open new ones.
pub struct Connections {
    address: Arc<str>,
    host: Option<HeaderValue>,
    tls: Option<UpstreamTls>,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("address", &self.address)
            .field("idle", &self.lock().len())
            .finish()
    }
}

impl Connections {
    /// Connections to the instance at `uri` (`http://host[:port]`, or `https://` with `tls`).
    #[must_use]
    pub fn new(uri: &Uri, tls: Option<UpstreamTls>) -> Self {
        let authority = uri.authority();
        let host = authority.map_or("", |a| a.host());
        let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
        Self {
            address: format!("{host}:{port}").into(),
            host: authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            tls,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The idle connection last returned that can still take a request.
    fn take(&self, settings: &PoolSettings) -> Option<Connection> {
        // The clock read once: each read is a call, and a connection is taken per request.
        let now = Instant::now();
        let idle_too_long = |since: Instant| now.saturating_duration_since(since) > settings.idle_timeout;
        loop {
            let Idle {
                mut connection,
                since,
            } = {
                let mut idle = self.lock();
                // Oldest first: the ones past the idle timeout are a prefix.
                let expired = idle.partition_point(|i| idle_too_long(i.since));
                idle.drain(..expired);
                idle.pop()?
            };
            if !idle_too_long(since) && connection.ready_for_reuse() {
                return Some(connection);
            }
        }
    }

    fn give_back(&self, connection: Connection, settings: &PoolSettings) {
        let mut idle = self.lock();
        if idle.len() < settings.max_idle {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, settings: &PoolSettings) -> Result<Connection, SendError> {
        let failed = |source| SendError::Connect {
            address: Arc::clone(&self.address),
            source,
        };
        // The TLS handshake is part of connecting, bounded by the same timeout.
        let open = async {
            let stream = TcpStream::connect(&*self.address).await?;
            stream.set_nodelay(true)?;
            match &self.tls {
                None => Ok(Io::Plain(stream)),
                Some(tls) => Ok(Io::Tls(Box::new(
                    tls.connector.connect(tls.name.clone(), stream).await?,
                ))),
            }
        };
        let stream = tokio::time::timeout(settings.connect_timeout, open)
            .await
            .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
            .map_err(failed)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Connection {
            sender,
            driver: Some(Box::new(driver)),
        })
    }

    /// Sends `request` (its URI the path and query) on an idle connection or a new one, and
    /// returns the answer once its head has arrived; the body streams on the same connection.
    ///
    /// # Errors
    /// See [`SendError`].
    pub async fn send(
        self: &Arc<Self>,
        mut request: http::Request<Body>,
        settings: PoolSettings,
    ) -> Result<http::Response<UpstreamBody>, SendError> {
        // The client's `Host` went on as `x-forwarded-host`; the upstream is addressed by its own.
        if let Some(host) = &self.host {
            request.headers_mut().insert(header::HOST, host.clone());
        }
        let (connection, response) = match self.take(&settings) {
            Some(mut connection) => match exchange(&mut connection, request).await {
                Ok(response) => (connection, response),
                // Closed by the upstream as it was taken: nothing was sent, so a new
                // connection may carry the request.
                Err(mut refused) => {
                    let Some(request) = refused.take_message() else {
                        return Err(refused.into_error().into());
                    };
                    let mut connection = self.connect(&settings).await?;
                    let response = exchange(&mut connection, request)
                        .await
                        .map_err(hyper::client::conn::TrySendError::into_error)?;
                    (connection, response)
                }
            },
            None => {
                let mut connection = self.connect(&settings).await?;
                let response = exchange(&mut connection, request)
                    .await
                    .map_err(hyper::client::conn::TrySendError::into_error)?;
                (connection, response)
            }
        };
        let (parts, body) = response.into_parts();
        let body = UpstreamBody::streaming(
            body,
            Lease {
                home: Arc::clone(self),
                settings,
                connection,
            },
        );
        Ok(http::Response::from_parts(parts, body))
    }
}

/// Sends `request` on `connection`, driving it until the answer's head has arrived.
async fn exchange(
    connection: &mut Connection,
    request: http::Request<Body>,
) -> Result<http::Response<Incoming>, hyper::client::conn::TrySendError<http::Request<Body>>> {
    let mut sending = std::pin::pin!(connection.sender.try_send_request(request));
    let driver = &mut connection.driver;
    poll_fn(|cx| {
        // The connection first: it writes the request and reads the answer the other waits for.
        if let Some(running) = driver
            && Pin::new(&mut **running).poll(cx).is_ready()
        {
            // Ended (closed, or failed): the pending request is answered with the error.
            *driver = None;
        }
        sending.as_mut().poll(cx)
    })
    .await
}

/// The connection an answer is streaming on, back to its instance once the answer is read.
struct Lease {
    home: Arc<Connections>,
    settings: PoolSettings,
    connection: Connection,
}

impl Lease {
    fn give_back(self) {
        let Self {
            home,
            settings,
            connection,
        } = self;
        if connection.driver.is_some() {
            home.give_back(connection, &settings);
        }
    }
}

/// An upstream answer's body: streamed on the connection it came on (which it drives), or
/// already read whole.
#[derive(Debug)]
pub struct UpstreamBody(Source);

enum Source {
    Streaming {
        body: Incoming,
        /// Given back once the body has ended; dropped (closing the connection) if the body is
        /// abandoned before.
        lease: Option<Lease>,
    },
    Read(Option<Bytes>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Streaming { .. } => f.write_str("Streaming"),
            Self::Read(bytes) => f.debug_tuple("Read").field(bytes).finish(),
        }
    }
}

impl UpstreamBody {
    fn streaming(body: Incoming, lease: Lease) -> Self {
        Self(Source::Streaming {
            body,
            lease: Some(lease),
        })
    }

    /// A body already read whole.
    #[must_use]
    pub fn read(bytes: Bytes) -> Self {
        Self(Source::Read(Some(bytes)))
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Source::Streaming { body, lease } => {
                if let Some(held) = lease {
                    held.connection.drive(cx);
                }
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                match &frame {
                    Some(Ok(_)) if !body.is_end_stream() => {}
                    // Read to its end: the connection is ready for the next request.
                    None | Some(Ok(_)) => {
                        if let Some(mut held) = lease.take() {
                            held.connection.drive(cx);
                            held.give_back();
                        }
                    }
                    Some(Err(_)) => *lease = None,
                }
                Poll::Ready(frame)
            }
            Source::Read(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Source::Streaming { body, .. } => body.is_end_stream(),
            Source::Read(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Source::Streaming { body, .. } => body.size_hint(),
            Source::Read(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An answer without a body (or one whose end was never polled) leaves the connection
        // ready; anything else still has bytes on the way, and the connection closes.
        if let Source::Streaming { body, lease } = &mut self.0
            && body.is_end_stream()
            && let Some(held) = lease.take()
        {
            held.give_back();
        }
    }
}
