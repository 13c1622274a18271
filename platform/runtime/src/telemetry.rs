//! Logs and the trace pipeline, installed once per process.
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`): JSON lines for machines, readable
//! text in a terminal. A JSON line carries at its top level the `trace_id` and `span_id` of the
//! span it was written in, and the `service` and `correlation_id` of the request or event, so a
//! log line leads to its trace and one process running every service still tells them apart.

use std::fmt;
use std::io::IsTerminal as _;

use serde::{Deserialize, Serialize};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::trace::{self, TraceSettings, Tracing};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable text when stderr is a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object a line, for machines.
    Json,
    /// Coloured text, for a developer's terminal.
    Pretty,
}

/// Installs the global subscriber without traces; a second call does nothing.
pub fn init(format: LogFormat) {
    let _ = install(format, None);
}

/// Installs the global subscriber, with the trace pipeline of `traces` when they are on. Call
/// it on the runtime that serves (the exporter runs there). A second call does nothing.
#[must_use = "the pipeline sends its queued spans on shutdown"]
pub fn install(format: LogFormat, traces: Option<&TraceSettings>) -> Option<Tracing> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(TraceJson(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let (spans, tracing) = match traces.and_then(trace::start) {
        Some((tracer, tracing)) => {
            // Only the project's own spans become OpenTelemetry spans; log events stay logs.
            let ours = tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("mercato")
            });
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_level(false)
                // Futures instrumented with a span enter and leave it at every poll: timing each
                // (busy and idle times) and activating an OpenTelemetry context there (which
                // nothing here reads: parents come from the `tracing` spans) cost more CPU per
                // order than the spans themselves.
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_filter(ours);
            (Some(layer), Some(tracing))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(spans)
        .with(logs.with_filter(filter))
        .try_init()
        .ok()
        .and(tracing)
}

/// tracing-subscriber's JSON line with the trace and request fields lifted to the top level.
struct TraceJson(Format<Json>);

/// The request's fields a log line repeats at its top level, from the innermost span naming them.
const LIFTED: [&str; 3] = ["service", "correlation_id", "order_id"];

impl<S, N> FormatEvent<S, N> for TraceJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let mut top = serde_json::Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(fields.as_str()) else {
                    continue;
                };
                for key in LIFTED {
                    if !top.contains_key(key)
                        && let Some(value) = fields.get(key)
                    {
                        top.insert(key.to_owned(), value.clone());
                    }
                }
            }
        }
        if trace::enabled()
            && let Some(current) = ctx.lookup_current()
            && let Some(context) = tracing::dispatcher::get_default(|dispatch| {
                tracing_opentelemetry::get_otel_context(&current.id(), dispatch)
            })
        {
            use opentelemetry::trace::TraceContextExt as _;
            let span = context.span();
            let ids = span.span_context();
            if ids.is_valid() {
                top.insert("trace_id".into(), ids.trace_id().to_string().into());
                top.insert("span_id".into(), ids.span_id().to_string().into());
            }
        }
        let Some(rest) = line.strip_prefix('{').filter(|_| !top.is_empty()) else {
            return writer.write_str(&line);
        };
        let lifted = serde_json::Value::Object(top).to_string();
        writer.write_str(&lifted[..lifted.len() - 1])?;
        writer.write_char(',')?;
        writer.write_str(rest)
    }
}
