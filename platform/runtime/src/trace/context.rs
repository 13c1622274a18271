//! W3C `traceparent`: reading it from a caller, writing it onto a call or an event, and the
//! spans that start from it.
//!
//! Only `traceparent` travels (no `tracestate`, no baggage): it is all a trace needs to join, and
//! parsing it by hand keeps the hot path free of a propagator's allocations when tracing is off.

use http::{HeaderMap, HeaderValue};
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header (and envelope field) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// `00-<trace id>-<span id>-<flags>` for a valid context.
#[must_use]
pub fn format(context: &SpanContext) -> Option<String> {
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}

/// The remote span context a `traceparent` names; `None` when it is malformed or all zeros.
#[must_use]
pub fn parse(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four parts; a later version may append more, which we ignore.
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if ![version, trace, span, flags].into_iter().all(lower_hex) {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1),
        true,
        TraceState::NONE,
    );
    context.is_valid().then_some(context)
}

/// The context of a `traceparent` header, if the request carries a valid one.
#[must_use]
pub fn from_headers(headers: &HeaderMap) -> Option<SpanContext> {
    parse(headers.get(TRACEPARENT)?.to_str().ok()?)
}

/// The trace context of `span`, when it is recorded by OpenTelemetry.
#[must_use]
pub fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context().span().span_context().clone();
    context.is_valid().then_some(context)
}

/// `traceparent` of `span`, when it is traced.
#[must_use]
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    format(&span_context(span)?)
}

/// Makes `span` a child of the remote `parent`.
pub fn set_remote_parent(span: &tracing::Span, parent: SpanContext) {
    if !span.is_disabled() {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
}

/// Links `span`, work done for many traces at once (a batch), to each trace context of
/// `traceparents` that is valid.
pub fn link<'a>(span: &tracing::Span, traceparents: impl IntoIterator<Item = &'a str>) {
    if span.is_disabled() {
        return;
    }
    for context in traceparents.into_iter().filter_map(parse) {
        span.add_link(context);
    }
}

/// Puts `span`'s `traceparent` on an outgoing call's headers (nothing when it is not traced).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    if let Some(value) = traceparent(span).and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(TRACEPARENT, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_traceparent_round_trips() {
        let context = parse(SAMPLE).expect("valid");
        assert!(context.is_sampled());
        assert!(context.is_remote());
        assert_eq!(format(&context).as_deref(), Some(SAMPLE));
    }

    #[test]
    fn malformed_or_zero_traceparents_are_ignored() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_later_version_keeps_the_fields_it_shares_with_00() {
        let later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-more";
        let context = parse(later).expect("read as 00");
        assert!(!context.is_sampled());
    }

    #[test]
    fn an_untraced_span_has_no_traceparent() {
        assert!(traceparent(&tracing::Span::none()).is_none());
        let mut headers = HeaderMap::new();
        inject(&tracing::Span::none(), &mut headers);
        assert!(headers.is_empty());
    }
}
