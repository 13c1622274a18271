//! Active health checks: every instance of every upstream (both groups) is asked for its
//! readiness path every interval, all at once, each ask bounded by the check timeout. Verdict
//! changes are logged and kept in `gateway_upstream_instance_healthy`. Checks go over the
//! instance's own connections, so an `https://` instance is checked over mutual TLS as it is
//! proxied to.

use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Upstreams;
use super::connections::PoolSettings;
use super::instance::{HealthChange, Instance};
use crate::config::HealthCheckConfig;

/// Fetches `path` from one instance: the status, or why there was none in `timeout`.
pub async fn probe(
    instance: &Instance,
    pool: PoolSettings,
    path: &str,
    timeout: Duration,
) -> Result<StatusCode, String> {
    let (request, body) = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::empty())
        .map_err(|_| format!("{path:?} is not a path"))?
        .into_parts();
    let ask = async {
        let response = instance
            .connections
            .send(&request, body, None, pool)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read to its end, the connection goes back to the pool for the next check.
        response.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok(status)
    };
    tokio::time::timeout(timeout, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {} ms", timeout.as_millis())))
}

/// The result of checking one instance, as the admin API reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckResult {
    pub url: String,
    pub ready: bool,
    pub smoke_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The checker; cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthChecker {
    upstreams: Upstreams,
    pool: PoolSettings,
    config: HealthCheckConfig,
}

impl HealthChecker {
    #[must_use]
    pub fn new(upstreams: Upstreams, pool: PoolSettings, config: HealthCheckConfig) -> Self {
        Self {
            upstreams,
            pool,
            config,
        }
    }

    /// Checks every instance each interval until `stop`; does nothing when checks are disabled.
    pub async fn run(self, stop: CancellationToken) {
        if !self.config.enabled {
            return;
        }
        let mut ticks = tokio::time::interval(Duration::from_millis(self.config.interval_ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => self.check_all().await,
            }
        }
    }

    /// One round of checks over every instance.
    pub async fn check_all(&self) {
        let checks = self
            .upstreams
            .all_instances()
            .into_iter()
            .map(|(upstream, instance)| async move {
                let passed = self.check_ready(&instance).await.is_ok();
                self.record(&upstream, &instance, passed);
            });
        futures_util::future::join_all(checks).await;
    }

    async fn check_ready(&self, instance: &Instance) -> Result<(), String> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        match probe(instance, self.pool, &self.config.path, timeout).await {
            Ok(status) if status.is_success() => Ok(()),
            Ok(status) => Err(format!("{} answered {status}", self.config.path)),
            Err(error) => Err(error),
        }
    }

    fn record(&self, upstream: &str, instance: &Instance, passed: bool) {
        let change = instance.record_check(
            passed,
            self.config.healthy_threshold,
            self.config.unhealthy_threshold,
        );
        match change {
            HealthChange::Unchanged => return,
            HealthChange::BecameHealthy => {
                tracing::info!(
                    upstream,
                    instance = instance.url(),
                    "instance passes its health checks again"
                );
            }
            HealthChange::BecameUnhealthy => {
                tracing::warn!(
                    upstream,
                    instance = instance.url(),
                    "instance fails its health checks: no traffic"
                );
            }
        }
        self.upstreams.health_changed(upstream, instance);
    }

    /// Checks each of `instances` now: readiness, then `smoke_path` (which must answer `2xx`).
    /// A deployment runs this on the group it is about to send traffic to.
    pub async fn check_now(
        &self,
        upstream: &str,
        instances: &[std::sync::Arc<Instance>],
        smoke_path: &str,
    ) -> Vec<CheckResult> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let checks = instances.iter().map(|instance| async move {
            let ready = self.check_ready(instance).await;
            self.record(upstream, instance, ready.is_ok());
            let smoke = probe(instance, self.pool, smoke_path, timeout).await;
            let error = match (&ready, &smoke) {
                (Err(e), _) => Some(format!("readiness: {e}")),
                (Ok(()), Err(e)) => Some(format!("smoke: {e}")),
                (Ok(()), Ok(status)) if !status.is_success() => {
                    Some(format!("smoke: {smoke_path} answered {status}"))
                }
                _ => None,
            };
            CheckResult {
                url: instance.url().to_owned(),
                ready: ready.is_ok(),
                smoke_status: smoke.ok().map(|s| s.as_u16()),
                error,
            }
        });
        futures_util::future::join_all(checks).await
    }
}
