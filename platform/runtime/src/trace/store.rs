//! The process's recent spans, kept in memory so an order's trace can be read without a
//! collector: a bounded ring, the oldest span dropped first.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::trace::SpanData;
use serde::{Deserialize, Serialize};

use super::SERVICE;

/// The attribute naming the order a span worked on; how a trace is found from an order id.
pub const ORDER_ID: &str = "order.id";

/// One finished span as the store keeps it and the admin endpoint returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSpan {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub name: String,
    pub service: String,
    pub kind: String,
    /// Unix nanoseconds.
    pub start_ns: u64,
    pub end_ns: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl StoredSpan {
    fn from_data(span: &SpanData) -> Self {
        let nanos = |t: std::time::SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        let attributes: BTreeMap<String, String> = span
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str().to_owned(), kv.value.as_str().into_owned()))
            .collect();
        Self {
            trace_id: span.span_context.trace_id().to_string(),
            span_id: span.span_context.span_id().to_string(),
            parent_span_id: (span.parent_span_id != SpanId::INVALID).then(|| span.parent_span_id.to_string()),
            name: span.name.to_string(),
            service: attributes.get(SERVICE).cloned().unwrap_or_default(),
            kind: kind_name(&span.span_kind).to_owned(),
            start_ns: nanos(span.start_time),
            end_ns: nanos(span.end_time),
            attributes,
        }
    }
}

#[must_use]
pub fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

/// A bounded ring of recent spans.
#[derive(Debug)]
pub struct SpanStore {
    capacity: usize,
    spans: Mutex<VecDeque<StoredSpan>>,
}

impl SpanStore {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            spans: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
        }
    }

    pub(crate) fn push(&self, span: &SpanData) {
        if self.capacity == 0 {
            return;
        }
        let stored = StoredSpan::from_data(span);
        let mut spans = self
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spans.len() == self.capacity {
            spans.pop_front();
        }
        spans.push_back(stored);
    }

    /// Every kept span of the trace `trace_id`, by start time.
    #[must_use]
    pub fn trace(&self, trace_id: &str) -> Vec<StoredSpan> {
        self.traces(|_| BTreeSet::from([trace_id.to_owned()]))
    }

    /// Every kept span of every trace in which some span worked on `order_id`, by start time.
    #[must_use]
    pub fn order(&self, order_id: &str) -> Vec<StoredSpan> {
        self.traces(|spans| {
            spans
                .iter()
                .filter(|s| s.attributes.get(ORDER_ID).is_some_and(|o| o == order_id))
                .map(|s| s.trace_id.clone())
                .collect()
        })
    }

    /// The kept spans of the traces `which` picks, by start time.
    fn traces(&self, which: impl FnOnce(&VecDeque<StoredSpan>) -> BTreeSet<String>) -> Vec<StoredSpan> {
        let spans = self
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let traces = which(&spans);
        let mut found: Vec<StoredSpan> = spans
            .iter()
            .filter(|s| traces.contains(&s.trace_id))
            .cloned()
            .collect();
        found.sort_by_key(|s| s.start_ns);
        found
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, SystemTime};

    use opentelemetry::trace::{SpanContext, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn span(trace: u128, id: u64, parent: u64, order: Option<&str>) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(id);
        let mut attributes = vec![KeyValue::new(SERVICE, "orders")];
        if let Some(order) = order {
            attributes.push(KeyValue::new(ORDER_ID, order.to_owned()));
        }
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed("step"),
            start_time: start,
            end_time: start + Duration::from_millis(5),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    #[test]
    fn an_orders_traces_are_found_whole_and_others_left_out() {
        let store = SpanStore::new(10);
        store.push(&span(1, 3, 2, None));
        store.push(&span(1, 2, 1, Some("o-1")));
        store.push(&span(1, 1, 0, None));
        store.push(&span(2, 4, 0, Some("o-2")));
        let found = store.order("o-1");
        let ids: Vec<&str> = found.iter().map(|s| s.span_id.as_str()).collect();
        assert_eq!(ids, ["0000000000000001", "0000000000000002", "0000000000000003"]);
        assert_eq!(found[0].parent_span_id, None);
        assert_eq!(found[1].parent_span_id.as_deref(), Some("0000000000000001"));
        assert_eq!(found[0].service, "orders");
        assert_eq!(found[0].end_ns - found[0].start_ns, 5_000_000);
        assert_eq!(store.trace(&found[0].trace_id).len(), 3);
        assert!(store.order("o-3").is_empty());
    }

    #[test]
    fn the_oldest_spans_go_first_when_the_store_is_full() {
        let store = SpanStore::new(2);
        store.push(&span(1, 1, 0, Some("o-1")));
        store.push(&span(2, 2, 0, Some("o-2")));
        store.push(&span(3, 3, 0, Some("o-3")));
        assert!(store.order("o-1").is_empty());
        assert_eq!(store.order("o-2").len(), 1);
        assert_eq!(store.order("o-3").len(), 1);
    }
}
