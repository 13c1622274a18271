//! A [`KeySource`] that reads a remote JWKS (the identity service's) and caches it.
//!
//! The set is fetched lazily, kept for `max_age`, and fetched again at once when a token names a
//! `kid` the cache lacks (a rotation), but at most once per `min_refresh_interval` so a flood of
//! tokens with made-up `kid`s cannot turn into a flood of fetches. Only one fetch runs at a time.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;

use crate::jwks::JwkSet;
use crate::token::{KeyFuture, KeySource, PublishedKeys, TokenError};

/// Cache settings for [`JwksClient`].
#[derive(Debug, Clone)]
pub struct JwksClientConfig {
    pub url: String,
    pub max_age: Duration,
    pub min_refresh_interval: Duration,
    pub timeout: Duration,
}

struct Cached {
    /// Shared, so that a lookup per request does not copy the set; its keys decoded once.
    keys: Arc<PublishedKeys>,
    fetched: Instant,
}

/// Fetches and caches a JWKS.
#[derive(Clone)]
pub struct JwksClient {
    config: JwksClientConfig,
    http: reqwest::Client,
    cache: Arc<RwLock<Option<Cached>>>,
    /// Held while fetching; remembers when the last fetch failed, and why, so a failing JWKS is
    /// asked no more often than a healthy one.
    fetching: Arc<tokio::sync::Mutex<Option<(Instant, TokenError)>>>,
}

impl std::fmt::Debug for JwksClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JwksClient {
    #[must_use]
    pub fn new(config: JwksClientConfig) -> Self {
        Self::with_http(config, reqwest::Client::builder())
    }

    /// As [`new`](Self::new), with `http` as the client (its TLS, say); the timeouts are set here.
    #[must_use]
    pub fn with_http(config: JwksClientConfig, http: reqwest::ClientBuilder) -> Self {
        let http = http
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .unwrap_or_default();
        Self {
            config,
            http,
            cache: Arc::default(),
            fetching: Arc::default(),
        }
    }

    fn cached(&self) -> Option<(Arc<PublishedKeys>, Instant)> {
        let guard = self
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.as_ref().map(|c| (Arc::clone(&c.keys), c.fetched))
    }

    /// Fetches the set now, unless another caller fetched it within `min_refresh_interval`.
    ///
    /// # Errors
    /// [`TokenError::KeysUnavailable`] when the JWKS cannot be fetched or parsed.
    pub async fn refresh(&self) -> Result<Arc<PublishedKeys>, TokenError> {
        let mut last_failure = self.fetching.lock().await;
        if let Some((set, fetched)) = self.cached()
            && fetched.elapsed() < self.config.min_refresh_interval
        {
            return Ok(set);
        }
        if let Some((at, error)) = last_failure.as_ref()
            && at.elapsed() < self.config.min_refresh_interval
        {
            return Err(error.clone());
        }
        let set = match self.fetch().await {
            Ok(set) => Arc::new(PublishedKeys::new(set)),
            Err(error) => {
                *last_failure = Some((Instant::now(), error.clone()));
                return Err(error);
            }
        };
        *last_failure = None;
        *self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Cached {
            keys: Arc::clone(&set),
            fetched: Instant::now(),
        });
        Ok(set)
    }

    async fn fetch(&self) -> Result<JwkSet, TokenError> {
        let unavailable = |e: reqwest::Error| TokenError::KeysUnavailable(e.to_string());
        let response = self
            .http
            .get(&self.config.url)
            .send()
            .await
            .map_err(unavailable)?;
        let response = response.error_for_status().map_err(unavailable)?;
        response.json::<JwkSet>().await.map_err(unavailable)
    }

    /// True when a key set is cached (for readiness).
    #[must_use]
    pub fn has_keys(&self) -> bool {
        self.cached().is_some_and(|(keys, _)| !keys.set().keys.is_empty())
    }

    async fn lookup(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>, TokenError> {
        let cached = self.cached();
        let fresh = cached
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < self.config.max_age);
        if fresh
            && let Some((keys, _)) = &cached
            && let Some(key) = keys.get(kid)
        {
            return Ok(Some(key));
        }
        match self.refresh().await {
            Ok(keys) => Ok(keys.get(kid)),
            // A stale set still verifies tokens while the identity service is briefly away.
            Err(e) => match cached {
                Some((keys, _)) => Ok(keys.get(kid)),
                None => Err(e),
            },
        }
    }
}

impl KeySource for JwksClient {
    fn key<'a>(&'a self, kid: &'a str) -> KeyFuture<'a> {
        Box::pin(self.lookup(kid))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A JWKS endpoint that always fails with 500 and counts the requests it got.
    async fn failing_jwks() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn a_failing_jwks_is_asked_no_more_often_than_the_refresh_interval() {
        let (url, hits) = failing_jwks().await;
        let client = JwksClient::new(JwksClientConfig {
            url,
            max_age: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        });
        let first = client.refresh().await.unwrap_err();
        assert!(first.is_transient());
        for _ in 0..10 {
            assert_eq!(client.refresh().await.unwrap_err(), first);
            assert!(client.key("some-kid").await.is_err());
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "the remembered failure is answered without a fetch"
        );
    }
}
