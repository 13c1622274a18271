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
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use mercato_resilience::Deadline;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::http1::{self, Decoder, RequestFraming, Step};

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
    /// The connection broke or closed while the request went out or its answer came back.
    #[error("the connection to {address} failed: {source}")]
    Connection {
        address: Arc<str>,
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP/1.1 as the gateway reads it (see [`http1`]).
    #[error("the answer from {address} is malformed: {reason}")]
    Malformed {
        address: Arc<str>,
        reason: http1::Malformed,
    },
    /// The client's request body failed: it outgrew the limit, stalled or broke off.
    #[error("the request body failed: {0}")]
    Body(#[source] axum::Error),
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

/// An open connection: its transport, the bytes read from it and not yet used, and the buffer
/// request heads are written into (kept, so that a request allocates none).
struct Connection {
    io: Io,
    read: BytesMut,
    write: Vec<u8>,
}

/// What a connection's read buffer starts with; an answer's head fits many times over.
const READ_CAPACITY: usize = 8 * 1024;
/// A request body's bytes are gathered up to this much before they are written; a frame that
/// does not fit is written on its own.
const WRITE_BATCH: usize = 64 * 1024;

impl Connection {
    fn new(io: Io) -> Self {
        Self {
            io,
            read: BytesMut::with_capacity(READ_CAPACITY),
            write: Vec::with_capacity(1024),
        }
    }

    /// Whether the connection can take a request now: the upstream has neither closed it nor
    /// sent anything while it idled (stray bytes would be read as the next answer).
    fn ready_for_reuse(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Reads what the upstream has sent into the read buffer; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CAPACITY / 2 {
            self.read.reserve(READ_CAPACITY);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Writes the head in the write buffer and the body after it, framed as `framing`.
    async fn write_request(&mut self, body: &mut Body, framing: RequestFraming) -> Result<(), Failure> {
        let mut sent = 0u64;
        if framing != RequestFraming::Empty {
            loop {
                // What the body has ready now goes out with what is gathered; the buffer is
                // written only when the body makes the request wait, or has grown large.
                let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        self.flush_write().await?;
                        poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                    }
                };
                let data = match frame {
                    None => break,
                    Some(Err(error)) => return Err(Failure::Body(error)),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => data,
                        // Trailers are not passed on.
                        Err(_) => continue,
                    },
                };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if framing == RequestFraming::Chunked {
                    http1::encode_chunk_size(&mut self.write, data.len());
                }
                if self.write.len() + data.len() <= WRITE_BATCH {
                    self.write.extend_from_slice(&data);
                } else {
                    // A large frame goes out as it is, not copied into the buffer, which then
                    // stays small on the idle connection.
                    self.flush_write().await?;
                    self.io.write_all(&data).await.map_err(Failure::Write)?;
                }
                if framing == RequestFraming::Chunked {
                    self.write.extend_from_slice(b"\r\n");
                }
            }
            match framing {
                RequestFraming::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
                RequestFraming::Length(length) if length != sent => {
                    return Err(Failure::Body(axum::Error::new(LengthMismatch { length, sent })));
                }
                _ => {}
            }
        }
        self.flush_write().await
    }

    async fn flush_write(&mut self) -> Result<(), Failure> {
        self.io.write_all(&self.write).await.map_err(Failure::Write)?;
        self.write.clear();
        Ok(())
    }

    /// Reads until an answer's head has arrived.
    async fn read_head(&mut self, method: &Method) -> Result<http1::Head, Failure> {
        // A taken connection has nothing buffered: parsing before the first read finds nothing.
        let mut parse = !self.read.is_empty();
        loop {
            if parse
                && let Some(head) = http1::parse_head(&mut self.read, method).map_err(Failure::Malformed)?
            {
                return Ok(head);
            }
            parse = true;
            let nothing_yet = self.read.is_empty();
            match self.fill().await {
                Ok(0) if nothing_yet => return Err(Failure::ClosedBeforeAnswer),
                Ok(0) => return Err(Failure::Read(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(error) if nothing_yet => return Err(Failure::ResetBeforeAnswer(error)),
                Err(error) => return Err(Failure::Read(error)),
            }
        }
    }
}

/// A request body that ended with more or fewer bytes than its `Content-Length` said.
#[derive(Debug, thiserror::Error)]
#[error("the request body had {sent} bytes where content-length said {length}")]
struct LengthMismatch {
    length: u64,
    sent: u64,
}

/// How one exchange on one connection failed.
#[derive(Debug)]
enum Failure {
    Write(std::io::Error),
    /// The upstream closed the connection before any byte of an answer.
    ClosedBeforeAnswer,
    ResetBeforeAnswer(std::io::Error),
    Read(std::io::Error),
    Malformed(http1::Malformed),
    Body(axum::Error),
}

impl Failure {
    /// Whether the request may go again on a new connection, after failing on a reused one.
    /// An idle connection the upstream was closing as it was taken refuses the write, or ends
    /// before answering; the request either never arrived or, for a safe method, may arrive twice.
    fn retry_on_new_connection(&self, method: &Method, body_sent: bool) -> bool {
        if body_sent {
            return false;
        }
        match self {
            Self::Write(_) => true,
            Self::ClosedBeforeAnswer | Self::ResetBeforeAnswer(_) => {
                matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            }
            Self::Read(_) | Self::Malformed(_) | Self::Body(_) => false,
        }
    }

    fn into_error(self, address: &Arc<str>) -> SendError {
        let address = Arc::clone(address);
        match self {
            Self::Write(source) | Self::Read(source) | Self::ResetBeforeAnswer(source) => {
                SendError::Connection { address, source }
            }
            Self::ClosedBeforeAnswer => SendError::Connection {
                address,
                source: std::io::ErrorKind::UnexpectedEof.into(),
            },
            Self::Malformed(reason) => SendError::Malformed { address, reason },
            Self::Body(source) => SendError::Body(source),
        }
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
        Ok(Connection::new(stream))
    }

    /// Sends the request with head `request` (its URI the path and query) and `body` on an idle
    /// connection or a new one, and returns the answer once its head has arrived; the body
    /// streams on the same connection. The upstream is addressed by its own authority as
    /// `Host`, and `deadline`, when given, goes with it as `x-request-deadline-ms`.
    ///
    /// # Errors
    /// See [`SendError`].
    pub async fn send(
        self: &Arc<Self>,
        request: &http::request::Parts,
        mut body: Body,
        deadline: Option<Deadline>,
        settings: PoolSettings,
    ) -> Result<http::Response<UpstreamBody>, SendError> {
        let size = body.size_hint();
        let (framing, announce) = http1::request_framing(
            &request.method,
            &request.headers,
            body.is_end_stream(),
            size.exact(),
        )
        .map_err(|reason| SendError::Body(axum::Error::new(reason)))?;
        let head = http1::RequestHead {
            method: &request.method,
            path: request
                .uri
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str),
            headers: &request.headers,
            host: self.host.as_ref(),
            announce,
            deadline_ms: deadline.map(|d| u64::try_from(d.remaining().as_millis()).unwrap_or(u64::MAX)),
        };
        let (mut connection, reused) = match self.take(&settings) {
            Some(connection) => (connection, true),
            None => (self.connect(&settings).await?, false),
        };
        connection.write.clear();
        head.encode(&mut connection.write);
        let mut answer = exchange(&mut connection, &request.method, &mut body, framing).await;
        if let Err(failure) = &answer
            && reused
            && failure.retry_on_new_connection(&request.method, framing != RequestFraming::Empty)
        {
            let mut fresh = self.connect(&settings).await?;
            fresh.write.clear();
            head.encode(&mut fresh.write);
            connection = fresh;
            answer = exchange(&mut connection, &request.method, &mut body, framing).await;
        }
        let http1::Head {
            response,
            framing,
            keep_alive,
        } = answer.map_err(|failure| failure.into_error(&self.address))?;
        let decoder = Decoder::new(framing);
        let lease = Lease {
            home: Arc::clone(self),
            settings,
            connection,
            keep_alive,
        };
        let body = if decoder.is_done() {
            lease.give_back();
            UpstreamBody(Source::Read(None))
        } else {
            UpstreamBody(Source::Streaming {
                decoder,
                lease: Some(lease),
            })
        };
        let (parts, ()) = response.into_parts();
        Ok(http::Response::from_parts(parts, body))
    }
}

/// Writes the request (its head already in the connection's write buffer) and reads the
/// answer's head. The body is written whole before the answer is read: the services read a
/// request's body before they answer, and one that answers early is read after the write fails.
async fn exchange(
    connection: &mut Connection,
    method: &Method,
    body: &mut Body,
    framing: RequestFraming,
) -> Result<http1::Head, Failure> {
    match connection.write_request(body, framing).await {
        Ok(()) => connection.read_head(method).await,
        // An upstream may answer before it has read the whole body (a refusal) and close the
        // connection: its answer is there to read all the same, and the connection ends after it.
        Err(Failure::Write(error)) if framing != RequestFraming::Empty => {
            match connection.read_head(method).await {
                Ok(head) => Ok(http1::Head {
                    keep_alive: false,
                    ..head
                }),
                Err(_) => Err(Failure::Write(error)),
            }
        }
        Err(other) => Err(other),
    }
}

/// The connection an answer is streaming on, back to its instance once the answer is read.
struct Lease {
    home: Arc<Connections>,
    settings: PoolSettings,
    connection: Connection,
    /// The answer allows another request on the connection after it.
    keep_alive: bool,
}

impl Lease {
    fn give_back(self) {
        let Self {
            home,
            settings,
            connection,
            keep_alive,
        } = self;
        // Bytes past the answer's end would be read as the next answer: such a connection ends.
        if keep_alive && connection.read.is_empty() {
            home.give_back(connection, &settings);
        }
    }
}

/// An upstream answer's body: streamed on the connection it came on, or already read whole.
#[derive(Debug)]
pub struct UpstreamBody(Source);

enum Source {
    Streaming {
        decoder: Decoder,
        /// Given back once the body has ended; dropped (closing the connection) if the body is
        /// abandoned before, or fails.
        lease: Option<Lease>,
    },
    Read(Option<Bytes>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Streaming { decoder, .. } => f.debug_tuple("Streaming").field(decoder).finish(),
            Self::Read(bytes) => f.debug_tuple("Read").field(bytes).finish(),
        }
    }
}

impl UpstreamBody {
    /// A body already read whole.
    #[must_use]
    pub fn read(bytes: Bytes) -> Self {
        Self(Source::Read(Some(bytes)))
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = SendError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SendError>>> {
        match &mut self.get_mut().0 {
            Source::Streaming { decoder, lease } => loop {
                let Some(held) = lease else {
                    return Poll::Ready(None);
                };
                let failed =
                    |held: &Lease, failure: Failure| Some(Err(failure.into_error(&held.home.address)));
                match decoder.decode(&mut held.connection.read) {
                    Ok(Step::Data(data)) => {
                        if decoder.is_done()
                            && let Some(held) = lease.take()
                        {
                            held.give_back();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Step::End) => {
                        if let Some(held) = lease.take() {
                            held.give_back();
                        }
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(reason) => {
                        let error = failed(held, Failure::Malformed(reason));
                        *lease = None;
                        return Poll::Ready(error);
                    }
                }
                match ready!(held.connection.poll_fill(cx)) {
                    Ok(0) if *decoder == Decoder::UntilClose => {
                        // The upstream's close ends such a body; the connection is spent.
                        *decoder = Decoder::Done;
                        *lease = None;
                        return Poll::Ready(None);
                    }
                    Ok(0) => {
                        let error = failed(held, Failure::Read(std::io::ErrorKind::UnexpectedEof.into()));
                        *lease = None;
                        return Poll::Ready(error);
                    }
                    Ok(_) => {}
                    Err(source) => {
                        let error = failed(held, Failure::Read(source));
                        *lease = None;
                        return Poll::Ready(error);
                    }
                }
            },
            Source::Read(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Source::Streaming { decoder, .. } => decoder.is_done(),
            Source::Read(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Source::Streaming { decoder, .. } => decoder
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            Source::Read(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
