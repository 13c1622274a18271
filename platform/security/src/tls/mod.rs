//! Mutual TLS between services: rustls configurations that require a certificate from the
//! service CA on both ends, present this process's own certificate (re-read when its files are
//! replaced, so rotation needs no restart), and name the peer by its SPIFFE identity.
//!
//! - [`identity`]: the `spiffe://mercato/<service>` URI of a peer certificate.
//! - [`reload`]: the process's own certificate and key, picked up again after rotation.
//!
//! One crypto provider for the whole binary: ring, which the NATS client's TLS already uses.

pub mod identity;
pub mod reload;
pub mod server_identity;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

pub use identity::{ServiceIdentity, peer_identity};
pub use reload::ReloadingCert;
pub use server_identity::ExpectService;

/// The files of one process's TLS: the CA it trusts, its certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The layout `mercato certs` writes: `ca.pem`, `SERVICE.pem`, `SERVICE.key` in `dir`.
    #[must_use]
    pub fn in_dir(dir: &Path, service: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{service}.pem")),
            key: dir.join(format!("{service}.key")),
        }
    }
}

/// A TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The provider every configuration here uses.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: ca.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_error(e.to_string()))? {
        let cert = cert.map_err(|e| file_error(e.to_string()))?;
        roots.add(cert).map_err(|e| file_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(file_error("holds no certificate".into()));
    }
    Ok(Arc::new(roots))
}

/// A server that requires every client to present a certificate from the CA, and presents its
/// own (reloaded after rotation). HTTP/2 and HTTP/1.1 are offered, so gRPC and HTTP share it.
///
/// # Errors
/// [`TlsError`] when a file is missing or unreadable or the key does not match the certificate.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, Arc::clone(&provider)).build()?;
    let own = ReloadingCert::load(files, Arc::clone(&provider))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(own));
    // Every connection authenticates in full: a resumed session would carry a peer's identity
    // past its certificate's rotation or expiry.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client that trusts only the CA and presents its own certificate (reloaded after rotation).
///
/// # Errors
/// As [`server_config`].
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let own = ReloadingCert::load(files, Arc::clone(&provider))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_cert_resolver(Arc::new(own));
    Ok(finish_client(config))
}

/// As [`client_config`], for calls to one service: the server must present the certificate of
/// `service` (its SPIFFE name; the host name dialled is not checked, see [`server_identity`]).
///
/// # Errors
/// As [`server_config`].
pub fn client_config_for(files: &TlsFiles, service: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let own = ReloadingCert::load(files, Arc::clone(&provider))?;
    let expect = ExpectService::new(roots(&files.ca)?, &provider, service);
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(expect))
        .with_client_cert_resolver(Arc::new(own));
    Ok(finish_client(config))
}

fn finish_client(mut config: rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(any(test, feature = "test-ca"))]
pub mod test_ca;

#[cfg(test)]
mod tests;
