//! The admin state (each upstream's instances and split) kept where every gateway and every
//! restart finds it: a file when embedded, a Redis hash when distributed (`[gateway.admin_state]`).
//!
//! The store is the source of truth: a change through the admin API is applied, then written
//! (per upstream, so changes to two upstreams never overwrite each other), and every gateway
//! reads the store at start and every `sync_interval_ms`, applying what differs. A change whose
//! write fails is answered `503` and undone by the next read. Applying keeps the instances that
//! stay (with their breakers and latency estimates) and makes new ones for new addresses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{AdminStateBackend, AdminStateConfig};

use super::Upstreams;

/// One upstream's admin state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamState {
    pub blue: Vec<String>,
    pub green: Vec<String>,
    pub green_percent: u8,
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("admin state file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin state is not valid JSON: {0}")]
    Format(#[from] serde_json::Error),
    #[error("admin state in redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("admin state in redis: no answer within {0:?}")]
    Timeout(Duration),
}

enum Backend {
    Memory,
    File {
        path: PathBuf,
        /// Read-modify-write of the file by this process, one at a time.
        lock: tokio::sync::Mutex<()>,
    },
    Redis {
        client: redis::Client,
        connection: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
        key: String,
        timeout: Duration,
    },
}

/// Where the admin state lives.
pub struct StateStore {
    backend: Backend,
    interval: Duration,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Memory => "memory".to_owned(),
            Backend::File { path, .. } => format!("file {}", path.display()),
            Backend::Redis { key, .. } => format!("redis {key}"),
        };
        f.debug_struct("StateStore").field("backend", &backend).finish()
    }
}

impl StateStore {
    /// # Errors
    /// A Redis URL that cannot be parsed, as a message.
    pub fn new(config: &AdminStateConfig) -> Result<Self, String> {
        let backend = match config.backend {
            AdminStateBackend::Memory => Backend::Memory,
            AdminStateBackend::File => Backend::File {
                path: PathBuf::from(&config.path),
                lock: tokio::sync::Mutex::new(()),
            },
            AdminStateBackend::Redis => Backend::Redis {
                client: redis::Client::open(config.redis_url.as_str()).map_err(|e| e.to_string())?,
                connection: tokio::sync::Mutex::new(None),
                key: format!("{}upstreams", config.key_prefix),
                timeout: Duration::from_millis(config.redis_timeout_ms),
            },
        };
        Ok(Self {
            backend,
            interval: Duration::from_millis(config.sync_interval_ms),
        })
    }

    /// Whether there is anything to share.
    #[must_use]
    pub fn is_shared(&self) -> bool {
        !matches!(self.backend, Backend::Memory)
    }

    /// Every stored upstream's state.
    ///
    /// # Errors
    /// See [`StateError`].
    pub async fn load(&self) -> Result<BTreeMap<String, UpstreamState>, StateError> {
        match &self.backend {
            Backend::Memory => Ok(BTreeMap::new()),
            Backend::File { path, .. } => read_file(path).await,
            Backend::Redis { .. } => {
                let stored: BTreeMap<String, String> = self
                    .redis(
                        |mut c, key| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await },
                    )
                    .await?;
                stored
                    .into_iter()
                    .map(|(name, json)| Ok((name, serde_json::from_str(&json)?)))
                    .collect()
            }
        }
    }

    /// Stores one upstream's state.
    ///
    /// # Errors
    /// See [`StateError`].
    pub async fn save(&self, name: &str, state: &UpstreamState) -> Result<(), StateError> {
        match &self.backend {
            Backend::Memory => Ok(()),
            Backend::File { path, lock } => {
                let _one_writer = lock.lock().await;
                let mut all = read_file(path).await?;
                all.insert(name.to_owned(), state.clone());
                let json = serde_json::to_vec_pretty(&all)?;
                // Written aside and renamed, so a crash leaves the old file or the new, never half.
                let partial = path.with_extension("json.partial");
                let io = |source| StateError::File {
                    path: path.display().to_string(),
                    source,
                };
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir).await.map_err(io)?;
                }
                tokio::fs::write(&partial, json).await.map_err(io)?;
                tokio::fs::rename(&partial, path).await.map_err(io)
            }
            Backend::Redis { .. } => {
                let json = serde_json::to_string(state)?;
                let name = name.to_owned();
                self.redis(|mut c, key| async move {
                    redis::cmd("HSET")
                        .arg(key)
                        .arg(name)
                        .arg(json)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
            }
        }
    }

    async fn redis<T, F, Fut>(&self, run: F) -> Result<T, StateError>
    where
        F: FnOnce(redis::aio::ConnectionManager, String) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        let Backend::Redis {
            client,
            connection,
            key,
            timeout,
        } = &self.backend
        else {
            unreachable!("only called for the redis backend");
        };
        let work = async {
            let c = crate::redis_connection::get(client, connection, *timeout).await?;
            Ok::<_, StateError>(run(c, key.clone()).await?)
        };
        tokio::time::timeout(*timeout, work)
            .await
            .map_err(|_| StateError::Timeout(*timeout))?
    }

    /// Applies the stored state to `upstreams`; an upstream the gateway does not know is skipped.
    ///
    /// # Errors
    /// The store could not be read.
    pub async fn sync(&self, upstreams: &Upstreams) -> Result<(), StateError> {
        for (name, state) in self.load().await? {
            match upstreams.apply(&name, &state) {
                Ok(true) => tracing::info!(upstream = %name, "admin state changed elsewhere; applied"),
                Ok(false) => {}
                Err(error) => tracing::warn!(upstream = %name, %error, "stored admin state not applied"),
            }
        }
        Ok(())
    }

    /// Reads the store every `sync_interval_ms` until `stop`.
    pub async fn run(
        self: std::sync::Arc<Self>,
        upstreams: Upstreams,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if !self.is_shared() {
            return;
        }
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
            match self.sync(&upstreams).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("admin state store reachable again");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot read the admin state; keeping the current one");
                }
                Err(_) => {}
            }
        }
    }
}

async fn read_file(path: &std::path::Path) -> Result<BTreeMap<String, UpstreamState>, StateError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(StateError::File {
            path: path.display().to_string(),
            source,
        }),
    }
}
