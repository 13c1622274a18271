//! The HTTP client services use to call each other.
//!
//! Timeouts are real (connect and whole-call), the connection pool is bounded, and the current
//! request's correlation id travels on every call.

use std::time::Duration;

use crate::config::ClientConfig;
use crate::correlation::{CorrelationId, HEADER};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid base url {0:?}: it must start with http:// or https://")]
    BaseUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// A client for one other service.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    base_url: String,
}

impl ServiceClient {
    /// # Errors
    /// A base URL that is not HTTP, or a client that cannot be built.
    pub fn new(base_url: &str, config: &ClientConfig) -> Result<Self, ClientError> {
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ClientError::BaseUrl(base_url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A request to `path` on the service, carrying the current correlation id.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base_url));
        match CorrelationId::current() {
            Some(id) => builder.header(HEADER, id.as_str()),
            None => builder,
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }
}
