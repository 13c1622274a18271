//! Traces end to end: a `mercato up` process exports to a real OTLP collector (a tonic server
//! implementing the OTLP trace service) in this test; one order placed through the gateway is
//! one trace across every service, and its log lines name that trace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use mercato_testkit::eventually;
use mercato_testkit::metrics::Exposition;
use mercato_testkit::service::try_json;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};

use crate::support::{
    PATIENCE, Process, access_token, customer_at, every_service_on_a_free_port, login, metrics_of, run,
    sample, unique_email,
};

/// A span as the collector received it, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    start: u64,
    attributes: BTreeMap<String, String>,
}

fn text(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some((kv.key.clone(), s.clone())),
            Any::IntValue(i) => Some((kv.key.clone(), i.to_string())),
            _ => None,
        })
        .collect()
}

/// The OTLP trace service, keeping every span it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let resource_attributes = resource.resource.map(|r| text(&r.attributes)).unwrap_or_default();
            let service = resource_attributes
                .get("service.name")
                .cloned()
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    kept.push(Received {
                        service: service.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        name: span.name,
                        kind: span.kind,
                        start: span.start_time_unix_nano,
                        attributes: text(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    /// Serves the collector on a free loopback port; its URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
        });
        url
    }

    fn trace(&self, trace_id: &str) -> Vec<Received> {
        let mut spans: Vec<Received> = self
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        spans.sort_by_key(|s| s.start);
        spans
    }

    fn order_trace(&self, order_id: &str) -> Option<String> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.attributes.get("order.id").is_some_and(|o| o == order_id))
            .map(|s| s.trace_id.clone())
    }
}

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// Asks the gateway at `base` for a product with a client's `traceparent`, and returns the
/// gateway's server span of that request as the collector received it.
async fn with_client_traceparent(collector: &Collector, http: &reqwest::Client, base: &str) -> Received {
    let correlation = uuid::Uuid::new_v4().to_string();
    let answer = http
        .get(format!("{base}/api/products/MUG-001"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("x-correlation-id", &correlation)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    eventually(PATIENCE, "the gateway's span of the request", || async {
        collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.service == "gateway"
                    && s.kind == SpanKind::Server as i32
                    && s.attributes.get("correlation_id") == Some(&correlation)
            })
            .cloned()
    })
    .await
}

const SERVICES: [&str; 5] = ["gateway", "orders", "inventory", "payments", "notifications"];

/// `mercato up` on free ports exporting to `endpoint` over gRPC, its log in `dir`.
async fn up(dir: &Path, endpoint: &str) -> Process {
    let data = dir.join("data");
    let config = every_service_on_a_free_port(dir);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("MERCATO_LOG__FORMAT", "json".to_owned()),
    ];
    Process::spawn_logged(
        &["up", "--data-dir", data.to_str().unwrap(), "--config", &config],
        &env,
        &["gateway", "orders"],
        &dir.join("up.log"),
    )
    .await
}

/// Places an order for a mug through the gateway and waits until it leaves `pending`.
pub(crate) async fn settled_order(http: &reqwest::Client, base: &str) -> Value {
    let token = customer_at(http, base, &unique_email()).await;
    let body = json!({
        "items": [{"sku": "MUG-001", "quantity": 1}],
        "payment": {"card_token": "tok_visa"},
        "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    });
    let placed = http
        .post(format!("{base}/api/orders"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201, "placing an order");
    let placed: Value = placed.json().await.unwrap();
    let id = placed["id"].as_str().unwrap().to_owned();
    eventually(PATIENCE, "the order to settle", || async {
        let order = try_json(http.get(format!("{base}/api/orders/{id}")).bearer_auth(&token)).await?;
        (order["status"] != "pending").then_some(order)
    })
    .await
}

/// The spans of the trace of `order_id`, once every service's part has arrived (the last is
/// notifications', after the confirmation) and the provider's: each process exports its own
/// batches, so the provider's server span may come after notifications'.
async fn order_spans(collector: &Collector, order_id: &str) -> Vec<Received> {
    eventually(PATIENCE, "every service's spans of the order", || async {
        let trace = collector.order_trace(order_id)?;
        let spans = collector.trace(&trace);
        let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        let steps = spans.iter().filter(|s| s.name.starts_with("saga ")).count();
        let complete = SERVICES.iter().all(|s| services.contains(s))
            && steps >= 3
            && provider_call(&spans).is_some_and(|call| provider_served(&spans, call));
        complete.then_some(spans)
    })
    .await
}

/// Payments' client span of its call to the payment provider.
fn provider_call(spans: &[Received]) -> Option<&Received> {
    spans.iter().find(|s| {
        s.service == "payments"
            && s.kind == SpanKind::Client as i32
            && s.attributes.contains_key("peer.service")
    })
}

/// Whether the provider's server span of `call` is among `spans`, as the call's child.
fn provider_served(spans: &[Received], call: &Received) -> bool {
    spans
        .iter()
        .any(|s| s.parent == call.span_id && s.kind == SpanKind::Server as i32)
}

/// One trace from the gateway's request on: every parent in it, the gateway's proxied call the
/// parent of orders' server span, every event handled the child of the producer that wrote it,
/// the provider's call inside, the saga's steps in order, naming the order, and each step's
/// database work (`db_system`) its child.
fn assert_one_trace(spans: &[Received], order_id: &str, db_system: &str) {
    let by_id: BTreeMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let roots: Vec<&Received> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!(roots[0].service, "gateway");
    assert_eq!(roots[0].kind, SpanKind::Server as i32);
    for span in spans {
        if !span.parent.is_empty() {
            assert!(
                by_id.contains_key(span.parent.as_str()),
                "{span:#?} has its parent in the trace"
            );
        }
    }
    // The gateway's proxied call is the parent of orders' server span.
    let placing = spans
        .iter()
        .find(|s| s.service == "orders" && s.kind == SpanKind::Server as i32 && s.name.starts_with("POST"))
        .expect("orders' server span of the placement");
    let proxied = by_id[placing.parent.as_str()];
    assert_eq!(
        (proxied.service.as_str(), proxied.kind),
        ("gateway", SpanKind::Client as i32)
    );
    // Every event handled is the child of the producer span that wrote it.
    let consumers: Vec<&Received> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer as i32)
        .collect();
    for service in ["inventory", "payments", "orders", "notifications"] {
        assert!(
            consumers.iter().any(|c| c.service == service),
            "{service} consumed an event of the order"
        );
    }
    for consumer in &consumers {
        let producer = by_id[consumer.parent.as_str()];
        assert_eq!(
            producer.kind,
            SpanKind::Producer as i32,
            "{consumer:#?} follows a producer"
        );
        assert_eq!(
            producer.attributes.get("messaging.message.type"),
            consumer.attributes.get("messaging.message.type")
        );
    }
    // The payment provider's call is in the trace too, though a worker made it later.
    let charge = provider_call(spans).expect("payments' call to the provider");
    assert!(
        provider_served(spans, charge),
        "the provider's server span is the call's child"
    );
    // The saga's steps, in order, each naming the order.
    let steps: Vec<&str> = spans
        .iter()
        .filter(|s| s.name.starts_with("saga "))
        .map(|s| {
            assert_eq!(s.attributes.get("order.id").map(String::as_str), Some(order_id));
            s.attributes["saga.step"].as_str()
        })
        .collect();
    assert_eq!(steps, ["order_placed", "stock_reserved", "payment_captured"]);
    // Each step appended to the order's stream in a span of its own, a client span of the
    // database; the placement's transaction began under orders' server span.
    for step in spans.iter().filter(|s| s.name.starts_with("saga ")) {
        let append = spans
            .iter()
            .find(|s| s.parent == step.span_id && s.name == "INSERT events")
            .unwrap_or_else(|| panic!("{step:#?} has its append as a child"));
        assert_eq!(append.kind, SpanKind::Client as i32);
        assert_eq!(
            append.attributes.get("db.system").map(String::as_str),
            Some(db_system)
        );
        assert_eq!(
            append.attributes.get("db.operation").map(String::as_str),
            Some("INSERT")
        );
        assert_eq!(append.service, "orders");
    }
    let begin = spans
        .iter()
        .find(|s| s.name == "BEGIN transaction" && s.service == "orders")
        .expect("orders' transaction began in the trace");
    assert!(by_id.contains_key(begin.parent.as_str()), "{begin:#?}");
}

/// The trace id in the exemplar of the confirm phase's histogram at orders, read as Prometheus
/// asks for OpenMetrics.
async fn confirm_exemplar(http: &reqwest::Client, orders: &str) -> Option<String> {
    let answer = http
        .get(format!("{orders}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .ok()?;
    let content_type = answer.headers().get("content-type")?.to_str().ok()?.to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let metrics = Exposition::parse(&answer.text().await.ok()?);
    metrics
        .matching(
            "mercato_orders_saga_phase_duration_seconds_bucket",
            &[("phase", "confirm")],
        )
        .find_map(|s| s.exemplar.as_ref()?.get("trace_id").cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_every_service() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = unique_email();
    let data = dir.path().join("data");
    let (ok, _, err) = run(
        &[
            "admin",
            "create",
            "--email",
            &admin,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("MERCATO_ADMIN_PASSWORD", "correct horse".to_owned())],
    )
    .await;
    assert!(ok, "{err}");
    let up = up(dir.path(), &endpoint).await;
    let base = up.url("gateway").to_owned();
    let http = reqwest::Client::new();
    let order = settled_order(&http, &base).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let id = order["id"].as_str().unwrap().to_owned();

    let spans = order_spans(&collector, &id).await;
    assert_one_trace(&spans, &id, "sqlite");

    // The request's log lines carry the same trace id, at the top level.
    let trace_id = spans[0].trace_id.clone();
    // So does the exemplar of the bucket the order's checkout time fell in.
    let exemplar = eventually(PATIENCE, "the confirm phase's exemplar", || {
        confirm_exemplar(&http, up.url("orders"))
    })
    .await;
    assert_eq!(exemplar, trace_id);
    let log = dir.path().join("up.log");
    let line = eventually(PATIENCE, "a log line of the trace", || async {
        let log = std::fs::read_to_string(&log).ok()?;
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["trace_id"] == trace_id.as_str() && l["service"] == "orders")
    })
    .await;
    assert!(line["span_id"].as_str().is_some_and(|s| s.len() == 16), "{line}");
    assert!(line["correlation_id"].is_string(), "{line}");

    // By default the gateway does not trust a client's trace context: a trace of its own.
    let edge = with_client_traceparent(&collector, &http, &base).await;
    assert_ne!(edge.trace_id, CLIENT_TRACE);
    assert!(edge.parent.is_empty(), "{edge:#?}");

    // `mercato trace` prints the same trace from the process's own span store.
    let orders = up.url("orders").to_owned();
    let token = access_token(&login(&http, &base, &admin).await);
    let (ok, out, err) = run(
        &["trace", &id, "--url", &orders],
        &[("MERCATO_ADMIN_TOKEN", token)],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("trace {trace_id}")), "{out}");
    let printed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.rsplit_once(" [").map(|(_, step)| step.trim_end_matches(']')))
        .collect();
    assert_eq!(
        printed,
        ["order_placed", "stock_reserved", "payment_captured"],
        "{out}"
    );
    // Only an admin reads spans.
    let customer = customer_at(&http, &base, &unique_email()).await;
    let refused = http
        .get(format!("{orders}/admin/traces?order_id={id}"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(up.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_away_orders_confirm_and_dropped_spans_are_counted() {
    // A port that was free a moment ago: nothing answers there.
    let endpoint = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let up = up(dir.path(), &endpoint).await;
    let base = up.url("gateway").to_owned();
    let http = reqwest::Client::new();
    let order = settled_order(&http, &base).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let orders = up.url("orders").to_owned();
    eventually(PATIENCE, "dropped spans to be counted", || async {
        let metrics = metrics_of(&http, &orders).await?;
        (sample(&metrics, "mercato_trace_spans_dropped_total")? > 0.0).then_some(())
    })
    .await;
    assert!(up.terminate().await.success());
}

/// Every service as its own `mercato serve` process, on PostgreSQL and NATS JetStream.
mod postgres {
    use super::*;
    use crate::faults::{Cluster, VISA};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_order_is_one_trace_across_service_processes() {
        let collector = Collector::default();
        let endpoint = collector.start().await;
        let cluster = Cluster::start(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("MERCATO_TELEMETRY__TRUST_CLIENT_TRACEPARENT", "true"),
        ])
        .await;
        cluster.all_ready().await;
        let shopper = cluster.customer().await;
        let placed = cluster.place(&shopper, &[VISA]).await;
        let id = placed[0].id.clone();
        let order = eventually(PATIENCE, "the order to settle", || async {
            let order = cluster.order(&shopper, &id).await?;
            (order["status"] != "pending").then_some(order)
        })
        .await;
        assert_eq!(order["status"], "confirmed", "{order}");
        let spans = order_spans(&collector, &id).await;
        assert_one_trace(&spans, &id, "postgresql");
        let orders = cluster.url("orders", "");
        let exemplar = eventually(PATIENCE, "the confirm phase's exemplar", || {
            confirm_exemplar(&cluster.http, &orders)
        })
        .await;
        assert_eq!(exemplar, spans[0].trace_id);
        // Configured to trust them, the gateway continues a client's trace.
        let edge = with_client_traceparent(&collector, &cluster.http, &cluster.url("gateway", "")).await;
        assert_eq!(
            (edge.trace_id.as_str(), edge.parent.as_str()),
            (CLIENT_TRACE, CLIENT_SPAN)
        );
        cluster.stop().await;
    }
}
