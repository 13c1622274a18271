//! A service CA in a temporary directory, and the `[tls]` settings of the services it certifies.

use mercato_runtime::tls::TlsConfig;
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
        }
    }
}
