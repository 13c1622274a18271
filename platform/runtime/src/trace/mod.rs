//! Traces: OpenTelemetry spans from `tracing` spans, joined across services by W3C
//! `traceparent` (HTTP and gRPC headers, and the envelope of every event).
//!
//! - [`context`]: reading and writing `traceparent`, and parenting a span on it.
//! - [`settings`]: `[telemetry]` and the standard `OTEL_*` variables.
//! - `pipeline`: finished spans to the in-memory [`store`] and, batched and never blocking, to
//!   an OTLP collector per service name; drops counted.
//! - [`store`]: the process's recent spans, read by the admin endpoint and `mercato trace`.
//!
//! A span is a `tracing` span with `otel.kind` (and `otel.name`); the one that names `service`
//! decides the `service.name` its descendants report under. Installed once per process by
//! [`crate::telemetry::install`]; while it is not, every helper here does nothing.

pub mod context;
pub mod endpoint;
mod pipeline;
pub mod settings;
pub mod store;

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use prometheus_client::registry::Registry;

pub use context::{TRACEPARENT, traceparent};
pub use pipeline::SpanCounts;
pub use settings::{Ratio, TraceProtocol, TraceSettings};
pub use store::{SpanStore, StoredSpan};

/// The span attribute (and log field) naming the service a span belongs to.
pub const SERVICE: &str = "service";

/// What an installed pipeline shares with the rest of the process.
#[derive(Debug)]
struct Installed {
    store: Arc<SpanStore>,
    trust_client_traceparent: bool,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();
static COUNTS: OnceLock<SpanCounts> = OnceLock::new();

fn counts() -> &'static SpanCounts {
    COUNTS.get_or_init(SpanCounts::default)
}

/// Whether spans are being recorded in this process.
#[must_use]
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// Whether the edge continues a trace a client started.
#[must_use]
pub fn trusts_client_traceparent() -> bool {
    INSTALLED.get().is_some_and(|i| i.trust_client_traceparent)
}

/// The process's span store, when tracing is on.
#[must_use]
pub fn store() -> Option<&'static SpanStore> {
    INSTALLED.get().map(|i| i.store.as_ref())
}

/// The trace id of the current span when its trace is recorded (sampled), for a metric's
/// exemplar: a link to a trace that exists.
#[must_use]
pub fn current_trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = context::span_context(&tracing::Span::current())?;
    context.is_sampled().then(|| context.trace_id().to_string())
}

/// Adds the span counters to a service's registry.
pub fn register_metrics(registry: &mut Registry) {
    let counts = counts();
    mercato_resilience::register_metrics!(registry, {
        counts.exported => "mercato_trace_spans_exported", "Finished spans sent to the OTLP collector";
        counts.dropped => "mercato_trace_spans_dropped", "Finished spans dropped: the export queue was full or the collector failed or was away";
    });
}

/// The running trace pipeline; [`Tracing::shutdown`] sends what is queued.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    exporter: Option<tokio::task::JoinHandle<()>>,
}

impl Tracing {
    /// Stops recording and waits (at most `patience`) for the queued spans to be sent.
    pub async fn shutdown(self, patience: std::time::Duration) {
        let _ = self.provider.shutdown();
        if let Some(exporter) = self.exporter {
            let _ = tokio::time::timeout(patience, exporter).await;
        }
    }
}

/// Builds the pipeline for `settings` (on the current tokio runtime, whose task exports), and
/// marks tracing on for the process. `None` when traces are off or a pipeline is already
/// installed.
pub(crate) fn start(settings: &TraceSettings) -> Option<(SdkTracer, Tracing)> {
    if !settings.traces || INSTALLED.get().is_some() {
        return None;
    }
    let store = Arc::new(SpanStore::new(settings.kept_spans));
    let (pipeline, task) = pipeline::Pipeline::new(settings, store.clone(), counts().clone());
    let exporter = task.and_then(|task| match tokio::runtime::Handle::try_current() {
        Ok(runtime) => Some(runtime.spawn(task)),
        Err(_) => None,
    });
    let root = if settings.sample_ratio.0 >= 1.0 {
        Sampler::AlwaysOn
    } else {
        Sampler::TraceIdRatioBased(settings.sample_ratio.0)
    };
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(root)))
        .with_span_processor(pipeline)
        .build();
    let tracer = provider.tracer("mercato");
    let installed = Installed {
        store,
        trust_client_traceparent: settings.trust_client_traceparent,
    };
    INSTALLED.set(installed).ok()?;
    Some((tracer, Tracing { provider, exporter }))
}

/// A client span for a call to `target` (`operation` is the method or gRPC path); disabled
/// while tracing is off, so an untraced call pays for nothing.
#[must_use]
pub fn client_span(target: &str, operation: &str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "call",
        otel.kind = "client",
        otel.name = %format_args!("{operation} {target}"),
        peer.service = target,
    )
}

/// The `traceparent` an event written now carries: a producer span's, child of the current
/// span, or (outside any, as in a worker acting on a recorded command) of `cause`, the trace
/// context the work came with. `cause` itself while tracing is off or there is no trace.
#[must_use]
pub fn produce(event_type: &str, stream_id: &str, cause: Option<&str>) -> Option<String> {
    if !enabled() {
        return cause.map(str::to_owned);
    }
    let inside = context::span_context(&tracing::Span::current()).is_some();
    let remote = if inside {
        None
    } else {
        cause.and_then(context::parse)
    };
    if !inside && remote.is_none() {
        return cause.map(str::to_owned);
    }
    let span = tracing::info_span!(
        "publish",
        otel.kind = "producer",
        otel.name = %format_args!("{event_type} publish"),
        messaging.message.type = event_type,
        messaging.stream = stream_id,
    );
    if let Some(parent) = remote {
        context::set_remote_parent(&span, parent);
    }
    traceparent(&span).or_else(|| cause.map(str::to_owned))
}

/// The consumer span of `service` applying an event that carries `traceparent`: its child, so
/// the trace goes on across the bus. Disabled while tracing is off.
#[must_use]
pub fn consume(service: &str, event_type: &str, traceparent: Option<&str>) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "consume",
        service,
        otel.kind = "consumer",
        otel.name = %format_args!("{event_type} process"),
        messaging.message.type = event_type,
    );
    if let Some(parent) = traceparent.and_then(context::parse) {
        context::set_remote_parent(&span, parent);
    }
    span
}

/// The span of `service`'s work `name` resumed later from a recorded trace context (a worker
/// acting on a command it stored), child of `traceparent`. Disabled while tracing is off.
#[must_use]
pub fn resume(service: &str, name: &str, traceparent: Option<&str>) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("work", service, otel.name = name);
    if let Some(parent) = traceparent.and_then(context::parse) {
        context::set_remote_parent(&span, parent);
    }
    span
}
