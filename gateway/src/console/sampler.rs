//! What the System page charts: every instance's `/ready` and `/metrics`, read every interval
//! into a ring buffer per instance, so the page shows the last minutes without a metrics server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Clients;
use crate::upstream::Upstreams;

/// Routes the sampler itself calls, left out of the request rate.
const PROBES: [&str; 3] = ["/metrics", "/ready", "/health"];

/// One reading of one instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reading {
    pub at_ms: u64,
    pub up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `/ready`'s answer as it was given (status and each dependency's check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<Value>,
    #[serde(skip)]
    counters: Counters,
    pub outbox_backlog: Option<f64>,
    /// Consumer group → messages not yet acknowledged.
    pub consumer_lag: BTreeMap<String, f64>,
    /// Breaker name → its current state.
    pub breakers: BTreeMap<String, String>,
}

/// The cumulative counters a rate is the difference of.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    requests: f64,
    errors: f64,
    latency_sum: f64,
    latency_count: f64,
}

/// One interval between two readings.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub at_ms: u64,
    pub requests_per_sec: f64,
    /// Share of requests answered 5xx, 0 to 1.
    pub error_rate: f64,
    pub mean_latency_ms: f64,
}

/// An instance as the System page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    pub upstream: String,
    pub url: String,
    pub latest: Option<Reading>,
    pub series: Vec<Point>,
}

type Key = (String, String);

/// Where the gateway itself is read, and the client that reads it: over HTTPS when it serves
/// its clients TLS, trusting the CA of its public certificate.
#[derive(Debug, Clone)]
pub struct Own {
    pub url: String,
    pub http: reqwest::Client,
}

/// The readings of every instance, shared by the sampling task and the console's handlers.
#[derive(Debug, Clone)]
pub struct Sampler {
    upstreams: Upstreams,
    clients: Clients,
    /// The gateway itself, known once it is bound.
    own: Arc<OnceLock<Own>>,
    kept: usize,
    interval: Duration,
    readings: Arc<Mutex<BTreeMap<Key, VecDeque<Reading>>>>,
}

impl Sampler {
    pub fn new(upstreams: Upstreams, clients: Clients, interval: Duration, kept: usize) -> Self {
        Self {
            upstreams,
            clients,
            own: Arc::new(OnceLock::new()),
            kept,
            interval,
            readings: Arc::default(),
        }
    }

    /// Where the gateway itself answers, so it is sampled as one more instance.
    pub fn set_own(&self, own: Own) {
        let _ = self.own.set(own);
    }

    /// The client for `key`: the gateway's own for itself, else its upstream's.
    fn client_for(&self, key: &Key) -> &reqwest::Client {
        match self.own.get() {
            Some(own) if key.0 == crate::NAME && key.1 == own.url => &own.http,
            _ => self.clients.to(&key.0),
        }
    }

    fn targets(&self) -> Vec<Key> {
        let mut targets: Vec<Key> = self
            .upstreams
            .all_instances()
            .into_iter()
            .map(|(name, instance)| (name, instance.url().trim_end_matches('/').to_owned()))
            .collect();
        if let Some(own) = self.own.get() {
            targets.push((crate::NAME.to_owned(), own.url.clone()));
        }
        targets.sort();
        targets.dedup();
        targets
    }

    /// Samples every instance each interval until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.sample_all().await,
            }
        }
    }

    async fn sample_all(&self) {
        let targets = self.targets();
        let readings =
            futures_util::future::join_all(targets.iter().map(|key| self.read(self.client_for(key), &key.1)))
                .await;
        let mut kept = self
            .readings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // An instance removed from every upstream is forgotten.
        kept.retain(|key, _| targets.contains(key));
        for (key, reading) in targets.into_iter().zip(readings) {
            let ring = kept.entry(key).or_default();
            if ring.len() == self.kept {
                ring.pop_front();
            }
            ring.push_back(reading);
        }
    }

    async fn read(&self, http: &reqwest::Client, url: &str) -> Reading {
        let mut reading = Reading {
            at_ms: now_ms(),
            ..Reading::default()
        };
        // Bounded by the sampling interval: a hung instance shows as down, not as a stall.
        let timeout = self.interval.min(Duration::from_secs(2));
        let ready = http.get(format!("{url}/ready")).timeout(timeout).send().await;
        match ready {
            Ok(response) => {
                reading.up = true;
                reading.ready = response.json::<Value>().await.ok();
            }
            Err(error) => {
                reading.error = Some(error.to_string());
                return reading;
            }
        }
        let metrics = http.get(format!("{url}/metrics")).timeout(timeout).send().await;
        if let Ok(response) = metrics
            && let Ok(text) = response.text().await
        {
            read_metrics(&text, &mut reading);
        }
        reading
    }

    /// Every instance, with its latest reading and its rates over the window.
    pub fn report(&self) -> Vec<InstanceReport> {
        let kept = self
            .readings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.targets()
            .into_iter()
            .map(|(upstream, url)| {
                let ring = kept.get(&(upstream.clone(), url.clone()));
                InstanceReport {
                    latest: ring.and_then(|r| r.back().cloned()),
                    series: ring.map(series).unwrap_or_default(),
                    upstream,
                    url,
                }
            })
            .collect()
    }
}

/// An engine the services depend on (PostgreSQL, NATS, Redis, SQLite, the embedded bus), as
/// every instance's latest readiness check of it saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Dependency {
    pub engine: String,
    /// The worst of its checks: `down`, then `degraded`, else `up`.
    pub status: String,
    pub checks: Vec<DependencyCheck>,
}

/// One instance's check of an engine.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DependencyCheck {
    pub upstream: String,
    pub url: String,
    pub check: String,
    pub status: String,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Groups the checks that name their engine by engine; instances not read yet add nothing.
#[must_use]
pub fn dependencies(instances: &[InstanceReport]) -> Vec<Dependency> {
    let mut by_engine: BTreeMap<String, Vec<DependencyCheck>> = BTreeMap::new();
    for instance in instances {
        let checks = instance
            .latest
            .as_ref()
            .and_then(|r| r.ready.as_ref())
            .and_then(|ready| ready["checks"].as_array());
        for check in checks.into_iter().flatten() {
            let Some(engine) = check["engine"].as_str() else {
                continue;
            };
            let text = |key: &str| check[key].as_str().unwrap_or_default().to_owned();
            by_engine
                .entry(engine.to_owned())
                .or_default()
                .push(DependencyCheck {
                    upstream: instance.upstream.clone(),
                    url: instance.url.clone(),
                    check: text("name"),
                    status: text("status"),
                    latency_ms: check["latency_ms"].as_u64().unwrap_or_default(),
                    error: check["error"].as_str().map(str::to_owned),
                });
        }
    }
    by_engine
        .into_iter()
        .map(|(engine, checks)| {
            let worst = ["down", "degraded"]
                .into_iter()
                .find(|bad| checks.iter().any(|c| c.status == *bad))
                .unwrap_or("up");
            Dependency {
                engine,
                status: worst.to_owned(),
                checks,
            }
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The rates between consecutive readings that both reached the instance; a restart (counters
/// going down) starts over rather than showing a negative rate.
fn series(ring: &VecDeque<Reading>) -> Vec<Point> {
    ring.iter()
        .zip(ring.iter().skip(1))
        .filter(|(a, b)| a.up && b.up && b.counters.requests >= a.counters.requests && b.at_ms > a.at_ms)
        .map(|(a, b)| {
            let requests = b.counters.requests - a.counters.requests;
            let errors = (b.counters.errors - a.counters.errors).max(0.0);
            let count = b.counters.latency_count - a.counters.latency_count;
            let seconds = (b.at_ms - a.at_ms) as f64 / 1000.0;
            Point {
                at_ms: b.at_ms,
                requests_per_sec: requests / seconds,
                error_rate: if requests > 0.0 { errors / requests } else { 0.0 },
                mean_latency_ms: if count > 0.0 {
                    (b.counters.latency_sum - a.counters.latency_sum) / count * 1000.0
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// A series' labels, as written.
type Labels<'a> = Vec<(&'a str, &'a str)>;

/// One line of the text exposition format: name, labels, value.
fn parse_line(line: &str) -> Option<(&str, Labels<'_>, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, labels)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let labels = labels
        .trim_end_matches('}')
        .split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k, v.trim_matches('"')))
        })
        .collect();
    Some((name, labels, value))
}

fn label<'a>(labels: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn read_metrics(text: &str, reading: &mut Reading) {
    for (name, labels, value) in text.lines().filter_map(parse_line) {
        let probe = label(&labels, "route").is_some_and(|r| PROBES.contains(&r));
        match name {
            "http_requests_total" if !probe => {
                reading.counters.requests += value;
                if label(&labels, "status_code").is_some_and(|s| s.starts_with('5')) {
                    reading.counters.errors += value;
                }
            }
            "http_request_duration_seconds_sum" if !probe => reading.counters.latency_sum += value,
            "http_request_duration_seconds_count" if !probe => reading.counters.latency_count += value,
            "mercato_outbox_backlog" => *reading.outbox_backlog.get_or_insert(0.0) += value,
            "mercato_consumer_lag" => {
                if let Some(group) = label(&labels, "subscriber") {
                    reading.consumer_lag.insert(group.to_owned(), value);
                }
            }
            "circuit_breaker_state" if value >= 1.0 => {
                if let (Some(breaker), Some(state)) = (label(&labels, "name"), label(&labels, "state")) {
                    reading.breakers.insert(breaker.to_owned(), state.to_owned());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP http_requests Requests.
http_requests_total{method="GET",route="/api/orders/{id}",status_code="200"} 8
http_requests_total{method="POST",route="/api/orders",status_code="503"} 2
http_requests_total{method="GET",route="/metrics",status_code="200"} 40
http_request_duration_seconds_sum{method="GET",route="/api/orders/{id}"} 0.5
http_request_duration_seconds_count{method="GET",route="/api/orders/{id}"} 10
http_request_duration_seconds_sum{method="GET",route="/ready"} 9.0
mercato_outbox_backlog 3
mercato_consumer_lag{subscriber="orders-from-payments"} 4
circuit_breaker_state{name="customers",state="closed"} 1
circuit_breaker_state{name="customers",state="open"} 0
# EOF
"#;

    fn reading(at_ms: u64, text: &str) -> Reading {
        let mut reading = Reading {
            at_ms,
            up: true,
            ..Reading::default()
        };
        read_metrics(text, &mut reading);
        reading
    }

    #[test]
    fn reads_requests_errors_backlog_lag_and_breakers_leaving_out_probes() {
        let r = reading(0, TEXT);
        assert_eq!(r.counters.requests, 10.0);
        assert_eq!(r.counters.errors, 2.0);
        assert_eq!(r.counters.latency_sum, 0.5);
        assert_eq!(r.outbox_backlog, Some(3.0));
        assert_eq!(r.consumer_lag["orders-from-payments"], 4.0);
        assert_eq!(r.breakers["customers"], "closed");
    }

    #[test]
    fn rates_are_differences_over_time_and_a_restart_is_skipped() {
        let before = reading(1_000, TEXT);
        let after = reading(
            3_000,
            "http_requests_total{method=\"GET\",route=\"/a\",status_code=\"200\"} 10\n\
             http_requests_total{method=\"GET\",route=\"/a\",status_code=\"500\"} 20\n\
             http_request_duration_seconds_sum{method=\"GET\",route=\"/a\"} 2.5\n\
             http_request_duration_seconds_count{method=\"GET\",route=\"/a\"} 30\n",
        );
        let restarted = reading(
            5_000,
            "http_requests_total{method=\"GET\",route=\"/a\",status_code=\"200\"} 1\n",
        );
        let points = series(&VecDeque::from([before, after, restarted]));
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].requests_per_sec, 10.0);
        // 18 of the 20 requests in between failed.
        assert_eq!(points[0].error_rate, 0.9);
        assert_eq!(points[0].mean_latency_ms, 100.0);
    }

    fn instance(upstream: &str, ready: Option<Value>) -> InstanceReport {
        InstanceReport {
            upstream: upstream.to_owned(),
            url: format!("http://{upstream}"),
            latest: Some(Reading {
                up: ready.is_some(),
                ready,
                ..Reading::default()
            }),
            series: Vec::new(),
        }
    }

    #[test]
    fn dependencies_gather_each_engines_checks_and_take_the_worst_status() {
        let check = |name: &str, engine: &str, status: &str, ms: u64| serde_json::json!({"name": name, "engine": engine, "status": status, "latency_ms": ms});
        let instances = [
            instance(
                "orders",
                Some(serde_json::json!({"status": "ready", "checks": [
                    check("database", "postgres", "up", 2), check("bus", "nats", "up", 1)]})),
            ),
            instance(
                "payments",
                Some(serde_json::json!({"status": "not_ready", "checks": [
                    {"name": "database", "engine": "postgres", "status": "down", "latency_ms": 2000,
                     "error": "timed out after 2000 ms"},
                    check("bus", "nats", "up", 3)]})),
            ),
            instance(
                "gateway",
                Some(serde_json::json!({"status": "ready", "checks": [
                    {"name": "jwks", "status": "up", "latency_ms": 0},
                    check("redis", "redis", "degraded", 5)]})),
            ),
            instance("customers", None),
        ];
        let found = dependencies(&instances);
        let summary: Vec<(&str, &str, usize)> = found
            .iter()
            .map(|d| (d.engine.as_str(), d.status.as_str(), d.checks.len()))
            .collect();
        assert_eq!(
            summary,
            [
                ("nats", "up", 2),
                ("postgres", "down", 2),
                ("redis", "degraded", 1)
            ]
        );
        let down = &found[1].checks[1];
        assert_eq!((down.upstream.as_str(), down.latency_ms), ("payments", 2000));
        assert_eq!(down.error.as_deref(), Some("timed out after 2000 ms"));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(parse_line("no_value").is_none());
        assert!(parse_line("x{a=\"b\"} NaNish").is_none());
        assert_eq!(parse_line("x 1").map(|(n, _, v)| (n, v)), Some(("x", 1.0)));
    }
}
