//! A service CA in a temporary directory, the `[tls]` settings of the services it certifies, and
//! a server over mutual TLS with them.

use std::net::SocketAddr;

use axum::Router;
use mercato_runtime::tls::{Allow, ServerTls, TlsConfig};
use mercato_runtime::{CancellationToken, HttpConfig, Readiness, Registry, Server, Service};
use mercato_security::tls::TlsFiles;
use mercato_security::tls::test_ca::TestCa;

/// A CA and the certificates it issued, as `mercato certs` lays them out; removed on drop.
pub struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// # Panics
    /// The temporary directory cannot be made.
    #[must_use]
    pub fn new() -> Self {
        Self {
            ca: TestCa::new(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// Issues `service` a certificate (`spiffe://mercato/SERVICE`) and returns its files.
    #[must_use]
    pub fn issue(&self, service: &str) -> TlsFiles {
        self.ca.write(self.dir.path(), service);
        TlsFiles::in_dir(self.dir.path(), service)
    }

    /// Replaces `service`'s certificate and key with new ones, as a rotation does.
    pub fn rotate(&self, service: &str) {
        self.ca.rotate(self.dir.path(), service);
    }

    /// `[tls]` on, with `service`'s files (issued now).
    #[must_use]
    pub fn settings(&self, service: &str) -> TlsConfig {
        let files = self.issue(service);
        TlsConfig {
            enabled: true,
            ca: files.ca,
            cert: files.cert,
            key: files.key,
            probe_listen: None,
        }
    }
}

/// A server over mutual TLS, stopped when dropped.
#[derive(Debug)]
pub struct TlsServer {
    pub addr: SocketAddr,
    /// The plaintext `/health` and `/ready`, when asked for.
    pub probe: Option<SocketAddr>,
    shutdown: CancellationToken,
}

impl TlsServer {
    #[must_use]
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `routes` (their own fallback included) on a free loopback port over mutual TLS with
/// `files`, to the callers `allow` lets in; with `probe`, also `/health` and `/ready` in
/// plaintext on another free port.
///
/// # Panics
/// The files cannot be used or no port can be bound.
pub async fn serve_tls(routes: Router, files: &TlsFiles, allow: Allow, probe: bool) -> TlsServer {
    let service = Service {
        name: "tls-test",
        routes,
        readiness: Readiness::new(),
        registry: Registry::default(),
        own_fallback: true,
    };
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let tls = ServerTls::new(files, allow)
        .expect("usable TLS files")
        .with_probe(probe.then_some(loopback));
    let server = Server::bind_tls(loopback, &HttpConfig::default(), service, Some(tls))
        .await
        .expect("a free port");
    let shutdown = CancellationToken::new();
    let served = TlsServer {
        addr: server.local_addr(),
        probe: server.probe_addr(),
        shutdown: shutdown.clone(),
    };
    tokio::spawn(server.run_until_stopped(shutdown));
    served
}
