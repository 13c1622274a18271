//! Where finished spans go: the process's [`SpanStore`], and a bounded queue to the OTLP
//! exporter task. A span that finds the queue full, or whose export fails, is dropped and
//! counted; nothing on a request's path ever waits for the collector.
//!
//! One process may run several services (`mercato up`); each reports under its own
//! `service.name`. A span names its service in the `service` attribute (server and consumer
//! spans do), or inherits its local parent's; the exporter task keeps one exporter per service,
//! each with that service's resource.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::trace::{Span as _, SpanId, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::SERVICE;
use super::settings::{TraceProtocol, TraceSettings};
use super::store::SpanStore;

/// How long the exporter task gathers spans before sending a batch that is not full.
const SCHEDULE_DELAY: Duration = Duration::from_millis(200);
/// Open spans whose service is remembered for their children; past this, the oldest are
/// forgotten (a span that never ends must not grow the map forever).
const MAX_OPEN: usize = 65_536;

/// Counts of what became of finished spans.
#[derive(Debug, Clone, Default)]
pub struct SpanCounts {
    pub exported: Counter,
    pub dropped: Counter,
}

#[derive(Debug)]
pub(crate) struct Pipeline {
    store: Arc<SpanStore>,
    queue: Mutex<Option<mpsc::Sender<SpanData>>>,
    open: Mutex<HashMap<SpanId, Arc<str>>>,
    counts: SpanCounts,
}

fn service_of(attributes: &[KeyValue]) -> Option<Arc<str>> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == SERVICE)
        .map(|kv| Arc::from(kv.value.as_str().as_ref()))
}

impl Pipeline {
    /// The pipeline, and the exporter task's future when `settings` names an endpoint (to be
    /// spawned on the runtime that serves).
    pub(crate) fn new(
        settings: &TraceSettings,
        store: Arc<SpanStore>,
        counts: SpanCounts,
    ) -> (Self, Option<impl Future<Output = ()> + Send + 'static>) {
        let (queue, task) = match &settings.endpoint {
            Some(endpoint) => {
                let (tx, rx) = mpsc::channel(settings.queue.max(1));
                let exporter = Exporter {
                    endpoint: endpoint.clone(),
                    protocol: settings.protocol,
                    timeout: Duration::from_millis(settings.export_timeout_ms),
                    by_service: HashMap::new(),
                    counts: counts.clone(),
                };
                (Some(tx), Some(exporter.run(rx, settings.batch.max(1))))
            }
            None => (None, None),
        };
        let pipeline = Self {
            store,
            queue: Mutex::new(queue),
            open: Mutex::new(HashMap::new()),
            counts,
        };
        (pipeline, task)
    }
}

impl SpanProcessor for Pipeline {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        let Some(data) = span.exported_data() else {
            return;
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let service = match service_of(&data.attributes) {
            Some(own) => own,
            None => {
                let parent = cx.span().span_context().span_id();
                let Some(inherited) = open.get(&parent).cloned() else {
                    return;
                };
                span.set_attribute(KeyValue::new(SERVICE, inherited.to_string()));
                inherited
            }
        };
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        open.insert(data.span_context.span_id(), service);
    }

    fn on_end(&self, span: SpanData) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&span.span_context.span_id());
        self.store.push(&span);
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queue.as_ref()
            && queue.try_send(span).is_err()
        {
            self.counts.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Closing the queue ends the exporter task once it has sent what is queued.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).take();
        Ok(())
    }
}

/// The exporter task's state: one OTLP exporter per service name.
struct Exporter {
    endpoint: String,
    protocol: TraceProtocol,
    timeout: Duration,
    by_service: HashMap<Arc<str>, opentelemetry_otlp::SpanExporter>,
    counts: SpanCounts,
}

impl Exporter {
    async fn run(mut self, mut queue: mpsc::Receiver<SpanData>, batch: usize) {
        let mut spans = Vec::with_capacity(batch);
        loop {
            if queue.recv_many(&mut spans, batch).await == 0 {
                return;
            }
            if spans.len() < batch {
                tokio::time::sleep(SCHEDULE_DELAY).await;
                while spans.len() < batch
                    && let Ok(span) = queue.try_recv()
                {
                    spans.push(span);
                }
            }
            let mut groups: HashMap<Option<Arc<str>>, Vec<SpanData>> = HashMap::new();
            for span in spans.drain(..) {
                groups.entry(service_of(&span.attributes)).or_default().push(span);
            }
            for (service, group) in groups {
                self.export(service, group).await;
            }
        }
    }

    async fn export(&mut self, service: Option<Arc<str>>, spans: Vec<SpanData>) {
        let count = spans.len() as u64;
        let key = service.unwrap_or_else(|| Arc::from(""));
        if !self.by_service.contains_key(&key) {
            match self.build(&key) {
                Ok(exporter) => {
                    self.by_service.insert(key.clone(), exporter);
                }
                Err(error) => {
                    tracing::warn!(%error, "the span exporter could not be built; spans dropped");
                    self.counts.dropped.inc_by(count);
                    return;
                }
            }
        }
        let Some(exporter) = self.by_service.get(&key) else {
            return;
        };
        match tokio::time::timeout(self.timeout, exporter.export(spans)).await {
            Ok(Ok(())) => {
                self.counts.exported.inc_by(count);
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, count, "spans not exported; dropped");
                self.counts.dropped.inc_by(count);
            }
            Err(_) => {
                tracing::debug!(count, "span export timed out; dropped");
                self.counts.dropped.inc_by(count);
            }
        }
    }

    fn build(
        &self,
        service: &str,
    ) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
        let base = self.endpoint.trim_end_matches('/');
        let mut exporter = match self.protocol {
            TraceProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(base)
                .with_timeout(self.timeout)
                .build()?,
            TraceProtocol::HttpProtobuf => {
                let url = if base.ends_with("/v1/traces") {
                    base.to_owned()
                } else {
                    format!("{base}/v1/traces")
                };
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(url)
                    .with_timeout(self.timeout)
                    .build()?
            }
        };
        exporter.set_resource(&resource(service));
        Ok(exporter)
    }
}

/// The resource a service reports under: `service.name` is the service (or
/// `OTEL_SERVICE_NAME`, else `mercato`, for spans of no service), with `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(service: &str) -> Resource {
    if service.is_empty() {
        let default = Resource::builder().build();
        let named = default
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
        if named {
            return default;
        }
        return Resource::builder().with_service_name("mercato").build();
    }
    Resource::builder().with_service_name(service.to_owned()).build()
}
