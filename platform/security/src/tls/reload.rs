//! This process's own certificate and key, read from files and read again when they change, so
//! a rotated certificate is used by the next handshake without a restart.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{TlsError, TlsFiles};

/// How often a handshake may look at the files: a `stat` of two files, at most once a second.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Serves as the certificate resolver of a server and of a client.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    check_every: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// What tells a replaced file from the one loaded: modification times and sizes of both.
type Stamp = [(Option<SystemTime>, u64); 2];

impl ReloadingCert {
    /// Loads the certificate and key now.
    ///
    /// # Errors
    /// [`TlsError`] when a file is unreadable or the key does not belong to the certificate.
    pub fn load(files: &TlsFiles, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        Self::with_interval(files, provider, CHECK_EVERY)
    }

    /// As [`ReloadingCert::load`], looking at the files at most every `check_every`.
    ///
    /// # Errors
    /// As [`ReloadingCert::load`].
    pub fn with_interval(
        files: &TlsFiles,
        provider: Arc<CryptoProvider>,
        check_every: Duration,
    ) -> Result<Self, TlsError> {
        let stamp = stamp(files);
        let current = Arc::new(read(files, &provider)?);
        Ok(Self {
            files: files.clone(),
            provider,
            check_every,
            state: Mutex::new(State {
                current,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to present now, read again first if its files changed. A half-finished
    /// rotation (a new key beside the old certificate) keeps the old pair until both are new.
    #[must_use]
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let now = stamp(&self.files);
            if now != state.stamp {
                match read(&self.files, &self.provider) {
                    Ok(renewed) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                        state.current = Arc::new(renewed);
                        state.stamp = now;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TLS certificate files changed but cannot be used yet; keeping the loaded one");
                    }
                }
            }
        }
        Arc::clone(&state.current)
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    let one = |path: &Path| std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()));
    [one(&files.cert), one(&files.key)]
}

fn read(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &Path, reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e.to_string()))?;
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}
