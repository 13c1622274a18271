//! Why a service could not start: one type for every service.

use std::net::SocketAddr;

use mercato_messaging::BusError;
use mercato_runtime::InvalidSetting;
use mercato_storage::StorageError;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// Why a service could not start; every variant names the service.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{service}: invalid configuration: {source}")]
    Setting {
        service: &'static str,
        #[source]
        source: InvalidSetting,
    },
    #[error("{service} database: {source}")]
    Storage {
        service: &'static str,
        #[source]
        source: StorageError,
    },
    #[error("{service} event bus: {source}")]
    Bus {
        service: &'static str,
        #[source]
        source: BusError,
    },
    /// Something the service itself needs (signing keys, a client of another service, a cache).
    #[error("{service} {what}: {source}")]
    Dependency {
        service: &'static str,
        what: &'static str,
        #[source]
        source: Source,
    },
    #[error("{service} TLS: {source}")]
    Tls {
        service: &'static str,
        #[source]
        source: mercato_security::tls::TlsError,
    },
    #[error("{service} cannot listen on {addr}: {source}")]
    Bind {
        service: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl StartError {
    /// A failure of something `service` needs, described as `what`.
    pub fn dependency(service: &'static str, what: &'static str, source: impl Into<Source>) -> Self {
        Self::Dependency {
            service,
            what,
            source: source.into(),
        }
    }

    /// The setting that was refused, if that is why.
    #[must_use]
    pub fn invalid_setting(&self) -> Option<&InvalidSetting> {
        match self {
            Self::Setting { source, .. } => Some(source),
            _ => None,
        }
    }
}
