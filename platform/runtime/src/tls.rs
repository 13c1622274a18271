//! Mutual TLS on the runtime's server and clients, when `[tls]` is on.
//!
//! The server accepts only clients presenting a certificate from the service CA, names each by
//! its `spiffe://mercato/<service>` identity and asks the service's allow list whether that
//! caller may reach the path ([`Allow`]): a refusal is gRPC `PERMISSION_DENIED` or a `403`
//! problem naming the caller. `/health`, `/ready` and `/metrics` are open to every holder of a
//! certificate from the CA. The clients present this process's certificate and accept a server
//! only if its certificate names the service they meant to reach. Handshakes run beside the
//! accept loop, each bounded by [`HANDSHAKE_TIMEOUT`], so a slow or silent peer holds nobody up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use hyper_util::rt::TokioIo;
use mercato_security::tls::{ServiceIdentity, TlsError, TlsFiles, peer_identity};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream as ClientStream;
use tokio_rustls::server::TlsStream;

use crate::problem::Problem;
use crate::settings::{InvalidSetting, Validate, ensure};

/// How long a peer has to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[tls]`: this process's certificate, key and the CA it trusts (`mercato certs init` and
/// `mercato certs issue SERVICE` write them).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub enabled: bool,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With TLS on, `/health` and `/ready` (and nothing else) are also served in plaintext
    /// here, for probes that cannot present a certificate (a kubelet's).
    pub probe_listen: Option<SocketAddr>,
}

impl TlsConfig {
    /// The files, when TLS is on.
    #[must_use]
    pub fn files(&self) -> Option<TlsFiles> {
        self.enabled.then(|| TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}

impl Validate for TlsConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if !self.enabled {
            return Ok(());
        }
        for (path, key) in [(&self.ca, "ca"), (&self.cert, "cert"), (&self.key, "key")] {
            ensure(
                !path.as_os_str().is_empty(),
                key,
                "must name a file when TLS is enabled",
            )?;
        }
        Ok(())
    }
}

/// Whether the service `caller` may call `path` (with `grpc` for a gRPC call).
pub type Allow = Arc<dyn Fn(&str, &str, bool) -> bool + Send + Sync>;

/// A server's TLS: its rustls configuration, its allow list and its plaintext probe address.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    allow: Allow,
    probe: Option<SocketAddr>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// # Errors
    /// [`TlsError`] when a file is unreadable or the key does not match the certificate.
    pub fn new(files: &TlsFiles, allow: Allow) -> Result<Self, TlsError> {
        Ok(Self {
            config: mercato_security::tls::server_config(files)?,
            allow,
            probe: None,
        })
    }

    /// Also serves `/health` and `/ready`, and only those, in plaintext on `listen` (`[tls]
    /// probe_listen`): they say whether the process lives and is ready, nothing more, and a
    /// kubelet's probe carries no client certificate.
    #[must_use]
    pub fn with_probe(mut self, listen: Option<SocketAddr>) -> Self {
        self.probe = listen;
        self
    }

    pub(crate) fn probe(&self) -> Option<SocketAddr> {
        self.probe
    }

    pub(crate) fn listener(&self, tcp: TcpListener) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config)),
            handshakes: FuturesUnordered::new(),
        }
    }

    pub(crate) fn allow(&self) -> Allow {
        Arc::clone(&self.allow)
    }
}

type Handshake = BoxFuture<'static, Option<(TlsStream<TcpStream>, SocketAddr)>>;

/// Accepts TCP connections and hands on those whose handshake succeeded.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: FuturesUnordered<Handshake>,
}

impl TlsListener {
    fn start(&self, stream: TcpStream, peer: SocketAddr) -> Handshake {
        let _ = stream.set_nodelay(true);
        let accept = self.acceptor.accept(stream);
        Box::pin(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(stream)) => Some((stream, peer)),
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "TLS handshake refused");
                    None
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    None
                }
            }
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let handshake = self.start(stream, peer);
                        self.handshakes.push(handshake);
                    }
                    Err(error) => {
                        // As axum's own listener: out of descriptors or a reset connection.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    if let Some(accepted) = done {
                        return accepted;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A TLS connection's peer: its address and the service its certificate names.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: Option<ServiceIdentity>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            identity: stream
                .io()
                .get_ref()
                .1
                .peer_certificates()
                .and_then(peer_identity),
        }
    }
}

/// The calling service, as its certificate names it; in the request's extensions when TLS is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingService(pub ServiceIdentity);

const OPEN_TO_EVERY_SERVICE: [&str; 3] = ["/health", "/ready", "/metrics"];

/// Names the caller and refuses it unless the allow list lets it reach the path.
pub(crate) async fn authorize(State(allow): State<Allow>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.clone());
    let grpc = crate::grpc::is_grpc(&request);
    let path = request.uri().path().to_owned();
    let Some(Peer { addr, identity }) = peer else {
        return refuse(grpc, "the connection's peer is unknown".to_owned());
    };
    request.extensions_mut().insert(ConnectInfo(addr));
    let Some(identity) = identity else {
        return refuse(
            grpc,
            "the client certificate names no spiffe://mercato/ service".to_owned(),
        );
    };
    if !OPEN_TO_EVERY_SERVICE.contains(&path.as_str()) && !allow(identity.service(), &path, grpc) {
        tracing::warn!(caller = %identity, path, "call refused by the allow list");
        return refuse(grpc, format!("{identity} may not call {path}"));
    }
    request.extensions_mut().insert(CallingService(identity));
    next.run(request).await
}

fn refuse(grpc: bool, detail: String) -> Response {
    if grpc {
        crate::grpc::status_answer(tonic::Status::permission_denied(detail))
    } else {
        Problem::forbidden(detail).into_response()
    }
}

/// A client's TLS for calls to one service.
pub type ClientTls = Arc<rustls::ClientConfig>;

/// The rustls configuration for calls to `service`: this process's certificate, and the
/// server's must name `service`.
///
/// # Errors
/// [`TlsError`] when a file is unreadable or the key does not match the certificate.
pub fn client_for(files: &TlsFiles, service: &str) -> Result<ClientTls, TlsError> {
    mercato_security::tls::client_config_for(files, service)
}

/// `config` offering only `protocol` (reqwest here speaks HTTP/1.1 only; gRPC needs `h2`).
pub(crate) fn only(config: &rustls::ClientConfig, protocol: &[u8]) -> rustls::ClientConfig {
    let mut config = config.clone();
    config.alpn_protocols = vec![protocol.to_vec()];
    config
}

/// An HTTP client over `tls`.
pub fn reqwest_builder(
    builder: reqwest::ClientBuilder,
    tls: &rustls::ClientConfig,
) -> reqwest::ClientBuilder {
    builder.use_preconfigured_tls(only(tls, b"http/1.1"))
}

/// A lazily connected gRPC channel: over `tls` when given, else plain.
#[must_use]
pub fn channel(endpoint: &tonic::transport::Endpoint, tls: Option<&ClientTls>) -> tonic::transport::Channel {
    match tls {
        Some(tls) => endpoint.connect_with_connector_lazy(Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(only(tls, b"h2"))),
        }),
        None => endpoint.connect_lazy(),
    }
}

/// Opens a TCP connection to the URI's host and port, then the TLS session.
#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<ClientStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: {what}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
            let name = ServerName::try_from(host.clone()).map_err(|_| invalid("not a server name"))?;
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(tls.connect(name, stream).await?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::section;

    #[test]
    fn tls_that_is_on_needs_every_file_and_names_the_missing_one() {
        assert_eq!(section("tls", &TlsConfig::default()), Ok(()));
        let on = TlsConfig {
            enabled: true,
            ca: "ca.pem".into(),
            cert: "orders.pem".into(),
            key: "orders.key".into(),
            probe_listen: None,
        };
        assert_eq!(section("tls", &on), Ok(()));
        for (missing, key) in [("ca", "tls.ca"), ("cert", "tls.cert"), ("key", "tls.key")] {
            let mut config = on.clone();
            match missing {
                "ca" => config.ca = PathBuf::new(),
                "cert" => config.cert = PathBuf::new(),
                _ => config.key = PathBuf::new(),
            }
            assert_eq!(section("tls", &config).unwrap_err().key, key);
        }
    }
}
