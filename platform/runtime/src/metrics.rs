//! Prometheus metrics: the registry a service serves at `/metrics`, RED metrics per route, and
//! histograms whose buckets name the trace of an observation (OpenMetrics exemplars).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::MatchedPath;
use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The OpenMetrics text media type Prometheus negotiates.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The classic Prometheus text format, for a scraper that asks for it and not for OpenMetrics.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A route as a metric label: a router's template or a name shared with its route (the
/// gateway's route prefix), held as found so that labelling a request copies no string.
#[derive(Debug, Clone)]
pub enum RouteName {
    Template(MatchedPath),
    Shared(Arc<str>),
    Static(&'static str),
}

impl RouteName {
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Template(path) => path.as_str(),
            Self::Shared(name) => name,
            Self::Static(name) => name,
        }
    }
}

impl PartialEq for RouteName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteName {}

impl Hash for RouteName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

const STANDARD: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];
/// The standard methods' labels, then the one every other method shares (OpenTelemetry's name
/// for it): a client that invents methods cannot invent metric series.
const NAMES: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "_OTHER",
];

/// A method's place in [`NAMES`].
fn method_index(method: &Method) -> u8 {
    // At most 9: one of ten.
    STANDARD
        .iter()
        .position(|m| m == method)
        .unwrap_or(STANDARD.len()) as u8
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: RouteName,
    status_code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    method: &'static str,
    route: RouteName,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A request's labels (the method by its place in [`NAMES`]), to find its counter and
/// histogram again.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SeenLabels {
    method: u8,
    route: RouteName,
    status: u16,
}

/// A multiply-and-rotate hash (rustc's `FxHasher`) for [`SeenLabels`], whose values come from
/// a small set the service defines (its routes, the standard methods, status codes), never
/// from a client: a few instructions a word instead of SipHash's rounds.
#[derive(Default)]
struct LabelHasher(u64);

impl LabelHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for LabelHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Seen = HashMap<SeenLabels, (Counter, Histogram), BuildHasherDefault<LabelHasher>>;

/// `http_requests_total{method,route,status_code}` and
/// `http_request_duration_seconds{method,route}`; `route` is the route template, never the raw
/// path, so label cardinality stays bounded.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    /// The counter and histogram of each label set seen, shared with the families: one cheap lookup per request instead of one SipHash lookup in each family.
    seen: Arc<RwLock<Seen>>,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("http_requests", "HTTP requests handled", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to produce the response head",
            duration.clone(),
        );
        Self {
            requests,
            duration,
            seen: Arc::default(),
        }
    }

    /// Counts one request and its latency; it costs no allocation once its labels were seen.
    pub fn observe(&self, method: &Method, route: RouteName, status: u16, elapsed: Duration) {
        let labels = SeenLabels {
            method: method_index(method),
            route,
            status,
        };
        let seen = self.seen.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((requests, duration)) = seen.get(&labels) {
            duration.observe(elapsed.as_secs_f64());
            requests.inc();
            return;
        }
        drop(seen);
        let handles = self.observe_in_families(&labels, elapsed);
        self.seen
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(labels, handles);
    }

    /// Counts one request and its latency in the families, and returns the counter and the
    /// histogram counted in.
    fn observe_in_families(&self, labels: &SeenLabels, elapsed: Duration) -> (Counter, Histogram) {
        let duration = DurationLabels {
            method: NAMES[usize::from(labels.method)],
            route: labels.route.clone(),
        };
        let histogram = self.duration.get_or_create(&duration).clone();
        histogram.observe(elapsed.as_secs_f64());
        let counter = self
            .requests
            .get_or_create(&RequestLabels {
                method: duration.method,
                route: duration.route,
                status_code: labels.status,
            })
            .clone();
        counter.inc();
        (counter, histogram)
    }
}

/// An exemplar's labels: the trace an observation belongs to.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    trace_id: String,
}

/// A histogram whose every bucket keeps the trace id of its latest traced observation.
pub type TracedHistogram = HistogramWithExemplars<TraceExemplar>;

/// A [`TracedHistogram`] with `buckets` (upper bounds, ascending).
#[must_use]
pub fn traced_histogram(buckets: &[f64]) -> TracedHistogram {
    HistogramWithExemplars::new(buckets.iter().copied())
}

/// Observes `value` with `trace_id` as its bucket's exemplar; an observation made after the
/// traced work (a count taken once its transaction committed) passes the id it took in the
/// work's span ([`crate::trace::current_trace_id`]).
pub fn observe_in_trace(histogram: &TracedHistogram, value: f64, trace_id: Option<String>) {
    histogram.observe(value, trace_id.map(|trace_id| TraceExemplar { trace_id }), None);
}

/// The registry in the OpenMetrics text format, exemplars included.
#[must_use]
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The registry in the format an `Accept` header asks for, and its content type: OpenMetrics
/// unless the client names the classic text format and not OpenMetrics; the classic format
/// has no exemplars, so they are cut off its sample lines.
#[must_use]
pub fn render_for(accept: Option<&str>, registry: &Registry) -> (&'static str, String) {
    let text = render(registry);
    let accept = accept.unwrap_or_default();
    if accept.contains("application/openmetrics-text") || !accept.contains("text/plain") {
        return (CONTENT_TYPE, text);
    }
    let mut classic = String::with_capacity(text.len());
    for line in text.lines() {
        let sample = match line.split_once(" # {") {
            Some((sample, _)) if !line.starts_with('#') => sample,
            _ => line,
        };
        classic.push_str(sample);
        classic.push('\n');
    }
    (CLASSIC_CONTENT_TYPE, classic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_by_route_template() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        metrics.observe(
            &Method::GET,
            RouteName::Shared("/api/orders/{id}".into()),
            200,
            Duration::from_millis(3),
        );
        metrics.observe(
            &Method::from_bytes(b"PURGE").unwrap(),
            RouteName::Static("unmatched"),
            404,
            Duration::from_millis(1),
        );
        // Seen before: counted through the handles kept from the first time.
        metrics.observe(
            &Method::GET,
            RouteName::Shared("/api/orders/{id}".into()),
            200,
            Duration::from_millis(30),
        );
        let text = render(&registry);
        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/api/orders/{id}",status_code="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"http_request_duration_seconds_count{method="GET",route="/api/orders/{id}"} 2"#),
            "{text}"
        );
        assert!(text.contains("http_request_duration_seconds_bucket"));
        assert!(
            text.contains(r#"http_requests_total{method="_OTHER",route="unmatched",status_code="404"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn invented_methods_share_one_label() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        for n in 0..50 {
            let method = Method::from_bytes(format!("INVENTED{n}").as_bytes()).unwrap();
            metrics.observe(
                &method,
                RouteName::Static("unmatched"),
                405,
                Duration::from_millis(1),
            );
        }
        let text = render(&registry);
        assert!(
            text.contains(r#"http_requests_total{method="_OTHER",route="unmatched",status_code="405"} 50"#),
            "{text}"
        );
        assert!(!text.contains("INVENTED"), "{text}");
    }

    fn registry_with_an_exemplar() -> Registry {
        let mut registry = Registry::default();
        let histogram = traced_histogram(&[0.1, 1.0]);
        registry.register("phase_duration_seconds", "a phase", histogram.clone());
        let exemplar = TraceExemplar {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        };
        histogram.observe(0.5, Some(exemplar), None);
        registry
    }

    #[test]
    fn openmetrics_carries_the_exemplar_of_a_bucket() {
        let registry = registry_with_an_exemplar();
        for accept in [
            None,
            Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.2"),
        ] {
            let (content_type, text) = render_for(accept, &registry);
            assert_eq!(content_type, CONTENT_TYPE);
            assert!(
                text.contains(
                    r#"phase_duration_seconds_bucket{le="1.0"} 1 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.5"#
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn the_classic_format_has_the_samples_without_exemplars() {
        let registry = registry_with_an_exemplar();
        let (content_type, text) = render_for(Some("text/plain;version=0.0.4"), &registry);
        assert_eq!(content_type, CLASSIC_CONTENT_TYPE);
        assert!(
            text.contains("phase_duration_seconds_bucket{le=\"1.0\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("trace_id"), "{text}");
    }
}
