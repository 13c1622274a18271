//! Liveness and readiness.
//!
//! `/health` answers as long as the process serves. `/ready` runs every registered check at once,
//! each cut off by its own timeout (a hung dependency reports "timeout", it does not hang the
//! probe), and answers `503` when any check fails or the service is shutting down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The outcome of one check: `Err` carries a short reason for operators.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A check that can also report "degraded": working, but on a fallback (`Ok(Some(note))`).
pub type DegradableFuture = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send>>;

type Check = Arc<dyn Fn() -> DegradableFuture + Send + Sync>;

/// A registered check: its name, the engine it talks to when that is known, and the check.
#[derive(Clone)]
struct Registered {
    name: String,
    engine: Option<&'static str>,
    check: Check,
}

/// A service's readiness checks and its stopping flag.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<Registered>,
    timeout: Duration,
    stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|c| c.name.as_str()).collect();
        f.debug_struct("Readiness")
            .field("checks", &names)
            .finish_non_exhaustive()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

/// One check's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub status: &'static str,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The engine behind the dependency (`postgres`, `nats`, `redis`, …), so an operator's view
    /// can show each engine's state across services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<&'static str>,
}

/// The body of `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    pub status: &'static str,
    pub checks: Vec<CheckReport>,
}

impl ReadinessReport {
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

impl Readiness {
    #[must_use]
    pub fn new() -> Self {
        Self {
            checks: Vec::new(),
            timeout: Duration::from_secs(2),
            stopping: Arc::default(),
        }
    }

    /// Adds a named check.
    #[must_use]
    pub fn with_check<F, Fut>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push(Registered {
            name: name.to_owned(),
            engine: None,
            check: Arc::new(move || {
                let fut = check();
                Box::pin(async move { fut.await.map(|()| None) }) as DegradableFuture
            }),
        });
        self
    }

    /// Adds a check that may report "degraded" (`Ok(Some(note))`): the service stays ready, and
    /// the note tells operators what it is falling back on.
    #[must_use]
    pub fn with_degradable_check<F, Fut>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<String>, String>> + Send + 'static,
    {
        self.checks.push(Registered {
            name: name.to_owned(),
            engine: None,
            check: Arc::new(move || Box::pin(check()) as DegradableFuture),
        });
        self
    }

    /// Names the engine the check added last talks to (`postgres`, `nats`, `redis`, …).
    #[must_use]
    pub fn on_engine(mut self, engine: &'static str) -> Self {
        if let Some(last) = self.checks.last_mut() {
            last.engine = Some(engine);
        }
        self
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// From now on the service reports "stopping".
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    #[must_use]
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Runs every check concurrently.
    pub async fn report(&self) -> ReadinessReport {
        let timeout = self.timeout;
        let runs = self.checks.iter().map(|registered| {
            let Registered { name, engine, check } = registered;
            let fut = check();
            async move {
                let start = Instant::now();
                let outcome = tokio::time::timeout(timeout, fut).await;
                let latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                let (status, error) = match outcome {
                    Ok(Ok(None)) => ("up", None),
                    Ok(Ok(Some(note))) => ("degraded", Some(note)),
                    Ok(Err(reason)) => ("down", Some(reason)),
                    Err(_) => (
                        "down",
                        Some(format!("timed out after {} ms", timeout.as_millis())),
                    ),
                };
                CheckReport {
                    name: name.clone(),
                    status,
                    latency_ms,
                    error,
                    engine: *engine,
                }
            }
        });
        let checks = futures_util::future::join_all(runs).await;
        let status = if self.is_stopping() {
            "stopping"
        } else if checks.iter().all(|c| c.status != "down") {
            "ready"
        } else {
            "not_ready"
        };
        ReadinessReport { status, checks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hung_check_times_out_without_hanging_the_report() {
        let mut readiness = Readiness::new()
            .with_check("fast", || async { Ok(()) })
            .with_check("hung", std::future::pending);
        readiness.set_timeout(Duration::from_millis(500));
        let report = readiness.report().await;
        assert_eq!(report.status, "not_ready");
        let hung = report.checks.iter().find(|c| c.name == "hung").unwrap();
        assert_eq!(hung.error.as_deref(), Some("timed out after 500 ms"));
        assert_eq!(
            report.checks.iter().find(|c| c.name == "fast").unwrap().status,
            "up"
        );
    }

    #[tokio::test]
    async fn a_degraded_check_keeps_the_service_ready_and_says_why() {
        let readiness = Readiness::new()
            .with_check("db", || async { Ok(()) })
            .with_degradable_check("limiter", || async {
                Ok(Some("redis unreachable; local limits".into()))
            });
        let report = readiness.report().await;
        assert!(report.is_ready());
        let limiter = report.checks.iter().find(|c| c.name == "limiter").unwrap();
        assert_eq!(limiter.status, "degraded");
        assert_eq!(limiter.error.as_deref(), Some("redis unreachable; local limits"));
    }

    #[tokio::test]
    async fn a_check_names_its_engine_when_told_it() {
        let readiness = Readiness::new()
            .with_check("database", || async { Ok(()) })
            .on_engine("postgres")
            .with_check("jwks", || async { Ok(()) });
        let report = readiness.report().await;
        let engines: Vec<_> = report
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.engine))
            .collect();
        assert_eq!(engines, [("database", Some("postgres")), ("jwks", None)]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["checks"][0]["engine"], "postgres");
        assert!(json["checks"][1].get("engine").is_none());
    }

    #[tokio::test]
    async fn stopping_overrides_healthy_checks() {
        let readiness = Readiness::new().with_check("db", || async { Ok(()) });
        assert!(readiness.report().await.is_ready());
        readiness.set_stopping();
        assert_eq!(readiness.report().await.status, "stopping");
    }

    #[tokio::test]
    async fn a_failing_check_reports_its_reason() {
        let readiness = Readiness::new().with_check("db", || async { Err("refused".into()) });
        let report = readiness.report().await;
        assert_eq!(report.checks[0].error.as_deref(), Some("refused"));
    }
}
