//! The guards every call to another service passes, whatever its protocol ([`crate::client`] for
//! HTTP, [`crate::grpc`] for gRPC), built from [`mercato_resilience`]'s layers, outermost first:
//!
//! ```text
//! Retry (budget per target) -> CircuitBreaker (per target) -> Timeout (+ deadline) -> Bulkhead -> transport
//! ```
//!
//! A protocol supplies its transport and a [`Policy`]: which requests may be repeated, which
//! outcomes are worth repeating, and which count against the target's breaker.

use std::sync::Arc;

use mercato_resilience::register_metrics;
use mercato_resilience::retry::Replay;
use mercato_resilience::{
    BulkheadLayer, CircuitBreaker, CircuitBreakerLayer, CircuitBreakerMetrics, CircuitState, Deadline,
    DeadlineCarrier, ResilienceError, RetryLayer, TimeoutLayer,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use crate::client::ClientError;
use crate::config::{ClientConfig, setting_key};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    peer: String,
    outcome: &'static str,
}

/// The metrics of a service's clients: `circuit_breaker_state` and
/// `circuit_breaker_transitions_total` per target (`name`), `service_client_calls_total{peer,
/// outcome}` and `service_client_attempts_total{peer}` (attempts beyond calls are retries).
/// Register once per registry and share among the service's clients; the default is unregistered.
#[derive(Debug, Clone, Default)]
pub struct ClientMetrics {
    breakers: CircuitBreakerMetrics,
    calls: Family<OutcomeLabels, Counter>,
    attempts: Family<PeerLabels, Counter>,
}

impl ClientMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            breakers: CircuitBreakerMetrics::register(registry),
            ..Self::default()
        };
        register_metrics!(registry, {
            metrics.calls => "service_client_calls", "Calls to other services, by target and outcome";
            metrics.attempts => "service_client_attempts", "Attempts sent to other services, retries included";
        });
        metrics
    }
}

/// The sooner of two deadlines, if any.
pub(crate) fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a call's outcome says.
pub(crate) type Judge<Res, E> = fn(&Result<Res, ResilienceError<E>>) -> bool;

/// How one protocol judges its requests and outcomes.
pub(crate) struct Policy<Req, Res, E> {
    /// Whether the request may be sent twice (idempotent, or carrying an idempotency key).
    pub retryable: fn(&Req) -> bool,
    /// Whether an outcome may be different on another attempt.
    pub transient: Judge<Res, E>,
    /// Whether an outcome counts against the target's breaker.
    pub failure: Judge<Res, E>,
}

/// The guarded transport, ready to be cloned per call.
pub(crate) type Guarded<Req, Res, E> = BoxCloneSyncService<Req, Res, ResilienceError<E>>;

/// One target service: its name, breaker and metrics.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    name: Arc<str>,
    breaker: CircuitBreaker,
    metrics: ClientMetrics,
}

impl Target {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn breaker_state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Counts the call's outcome and logs one that produced no answer; `failure` is the
    /// protocol's judge of an answer.
    pub fn record<Res, E: std::fmt::Display>(
        &self,
        result: &Result<Res, ResilienceError<E>>,
        failure: Judge<Res, E>,
    ) {
        let outcome = match result {
            Ok(_) if failure(result) => "error_answer",
            Ok(_) => "ok",
            Err(error) => outcome(error),
        };
        self.metrics
            .calls
            .get_or_create(&OutcomeLabels {
                peer: self.name.to_string(),
                outcome,
            })
            .inc();
        if let Err(error) = result {
            tracing::warn!(peer = %self.name, outcome, %error, "call to another service failed");
        }
    }
}

fn outcome<E>(error: &ResilienceError<E>) -> &'static str {
    match error {
        ResilienceError::Inner(_) => "transport_error",
        ResilienceError::CircuitOpen { .. } => "circuit_open",
        ResilienceError::BudgetExhausted { .. } => "retry_budget_exhausted",
        ResilienceError::TimedOut(_) => "timeout",
        ResilienceError::DeadlineExceeded => "deadline_exceeded",
        ResilienceError::BulkheadFull { .. } => "bulkhead_full",
    }
}

/// Wraps `transport` in the guards for `target`, with `config`'s settings.
///
/// # Errors
/// [`ClientError::Setting`] for a setting the layers refuse.
pub(crate) fn guard<T, Req, Res, E>(
    target: &str,
    config: &ClientConfig,
    metrics: &ClientMetrics,
    policy: Policy<Req, Res, E>,
    transport: T,
) -> Result<(Guarded<Req, Res, E>, Target), ClientError>
where
    T: Service<Req, Response = Res, Error = ResilienceError<E>> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    Req: DeadlineCarrier + Replay + Send + 'static,
    Res: Send + 'static,
    E: Send + 'static,
{
    let invalid = |e: mercato_resilience::ConfigError| {
        ClientError::Setting(crate::settings::InvalidSetting::new(setting_key(e.key), e.reason))
    };
    let breaker = CircuitBreaker::new(
        target,
        config.circuit_breaker.to_config(),
        Some(metrics.breakers.clone()),
    )
    .map_err(invalid)?;
    let retry =
        RetryLayer::new(&config.retry.to_config(), policy.retryable, policy.transient).map_err(invalid)?;
    let bulkhead = BulkheadLayer::new(target, &config.bulkhead.to_config()).map_err(invalid)?;
    let attempts = metrics
        .attempts
        .get_or_create(&PeerLabels {
            peer: target.to_owned(),
        })
        .clone();
    let guarded = ServiceBuilder::new()
        .layer(retry)
        .layer(CircuitBreakerLayer::new(breaker.clone(), policy.failure))
        .layer(TimeoutLayer::new(config.timeout()))
        .layer(bulkhead)
        .map_request(move |request: Req| {
            attempts.inc();
            request
        })
        .service(transport);
    let target = Target {
        name: target.into(),
        breaker,
        metrics: metrics.clone(),
    };
    Ok((BoxCloneSyncService::new(guarded), target))
}
