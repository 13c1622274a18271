//! The check a client makes of the service it dialled: the chain ends at the service CA and the
//! certificate names the expected service (`spiffe://mercato/<service>`).
//!
//! The host name is not what identifies a service: the gateway dials pods by address and a
//! certificate cannot list every address a pod may get, so the SPIFFE name takes its place, as
//! it does between SPIFFE workloads.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::identity::peer_identity;

/// Accepts a server whose chain verifies against the CA and whose identity is `service`.
#[derive(Debug)]
pub struct ExpectService {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    service: String,
}

impl ExpectService {
    #[must_use]
    pub fn new(roots: Arc<RootCertStore>, provider: &CryptoProvider, service: &str) -> Self {
        Self {
            roots,
            algorithms: provider.signature_verification_algorithms,
            service: service.to_owned(),
        }
    }
}

impl ServerCertVerifier for ExpectService {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        match peer_identity(std::slice::from_ref(end_entity)) {
            Some(identity) if identity.service() == self.service => Ok(ServerCertVerified::assertion()),
            named => Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(WrongService {
                    expected: self.service.clone(),
                    presented: named.map(|n| n.to_string()),
                })),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server presented a valid certificate of another service (or of none).
#[derive(Debug, thiserror::Error)]
#[error("expected the certificate of spiffe://mercato/{expected}, the server presented {}", presented.as_deref().unwrap_or("one naming no service"))]
struct WrongService {
    expected: String,
    presented: Option<String>,
}
