//! `[gateway.edge]` and `[gateway.preauth]`: what a client connection, and a client's bad
//! tokens, may cost the gateway before a request is routed.

use mercato_runtime::settings::{InvalidSetting, Validate};
use serde::{Deserialize, Serialize};

/// Limits on client connections. The HTTP/2 defaults follow the fixes for rapid reset
/// (CVE-2023-44487): few concurrent streams and few streams a client may open and reset before
/// the gateway accepted them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Public TLS (`[gateway.edge.tls]`): clients are served over HTTPS with this certificate
    /// and key, reloaded when the files are replaced; no client certificate is asked for.
    pub tls: Option<PublicTls>,
    /// Longest wait for a request's whole header block, counted from when the connection is
    /// ready for it (so it also closes a kept-alive connection idle this long); a slower client
    /// is disconnected.
    pub header_read_timeout_ms: u64,
    /// Longest wait for the next piece of a request body; a slower client gets `408`.
    pub body_idle_timeout_ms: u64,
    /// Most header fields in a request (more: `431`).
    pub max_headers: usize,
    /// Most bytes of a request's head, request line and headers (more: `431`); at least 8192.
    pub max_header_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    /// Streams a client opened and reset before they were served; past it, the connection is
    /// closed with `ENHANCE_YOUR_CALM`.
    pub h2_max_pending_accept_reset_streams: usize,
    /// Streams the gateway had to reset because the client broke the protocol; past it, the
    /// connection is closed.
    pub h2_max_local_error_reset_streams: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            tls: None,
            header_read_timeout_ms: 30_000,
            body_idle_timeout_ms: 15_000,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            h2_max_concurrent_streams: 128,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 100,
        }
    }
}

impl Validate for EdgeConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        let key = |k: &str| format!("edge.{k}");
        for (name, value) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_idle_timeout_ms", self.body_idle_timeout_ms),
            ("max_headers", self.max_headers as u64),
            (
                "h2_max_concurrent_streams",
                u64::from(self.h2_max_concurrent_streams),
            ),
            (
                "h2_max_pending_accept_reset_streams",
                self.h2_max_pending_accept_reset_streams as u64,
            ),
            (
                "h2_max_local_error_reset_streams",
                self.h2_max_local_error_reset_streams as u64,
            ),
        ] {
            if value == 0 {
                return Err(InvalidSetting::new(key(name), "must be greater than 0"));
            }
        }
        if self.max_header_bytes < 8192 {
            return Err(InvalidSetting::new(
                key("max_header_bytes"),
                "must be at least 8192",
            ));
        }
        Ok(())
    }
}

/// `[gateway.preauth]`: failed authentications allowed per client address before its requests
/// that need a token are refused without checking it (see [`crate::preauth`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreauthConfig {
    pub enabled: bool,
    /// Failures an address may add per minute once its burst is used.
    pub failures_per_minute: u32,
    pub failure_burst: u32,
    /// Longer bearer tokens are refused unread.
    pub max_token_bytes: usize,
    /// Most addresses counted at once; idle ones are forgotten first.
    pub max_addresses: usize,
}

impl Default for PreauthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failures_per_minute: 60,
            failure_burst: 20,
            max_token_bytes: 4096,
            max_addresses: 100_000,
        }
    }
}

impl Validate for PreauthConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if !self.enabled {
            return Ok(());
        }
        for (name, value) in [
            ("failures_per_minute", u64::from(self.failures_per_minute)),
            ("failure_burst", u64::from(self.failure_burst)),
            ("max_token_bytes", self.max_token_bytes as u64),
            ("max_addresses", self.max_addresses as u64),
        ] {
            if value == 0 {
                return Err(InvalidSetting::new(
                    format!("preauth.{name}"),
                    "must be greater than 0",
                ));
            }
        }
        Ok(())
    }
}

/// The certificate (chain first) and key the gateway presents to its clients, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// The CA (PEM) that issued `cert`, trusted by the console's sampler when it reads the
    /// gateway itself over HTTPS; without it, `[tls]`'s CA is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
}

impl PublicTls {
    /// The server configuration: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1, the certificate reloaded
    /// after rotation.
    ///
    /// # Errors
    /// A file is unreadable, or the key does not match the certificate.
    pub fn server_config(
        &self,
    ) -> Result<std::sync::Arc<rustls::ServerConfig>, mercato_security::tls::TlsError> {
        let provider = mercato_security::tls::provider();
        let files = mercato_security::tls::TlsFiles {
            ca: std::path::PathBuf::new(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        let own = mercato_security::tls::ReloadingCert::load(&files, std::sync::Arc::clone(&provider))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(std::sync::Arc::new(own));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(std::sync::Arc::new(config))
    }
}
