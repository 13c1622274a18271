//! `deploy/observability`: every metric a Prometheus rule or a Grafana dashboard names is one
//! the system really exposes, read from the `/metrics` of every service of a `mercato up`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::{Process, every_service_on_a_free_port, metrics_of};

/// The metric families the files under `dir` name (series suffixes taken off).
fn named_metrics(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            let ours = [
                "http_",
                "mercato_",
                "service_client_",
                "circuit_breaker_",
                "orders_",
            ];
            if !ours.iter().any(|p| word.starts_with(p)) || word.contains(':') {
                continue;
            }
            let family = ["_bucket", "_count", "_sum", "_total", "_created"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            names.insert(family.to_owned());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_rules_and_dashboards_is_exposed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability");
    let named = named_metrics(&dir);
    assert!(
        named.len() > 10,
        "the rules and dashboards name metrics: {named:?}"
    );

    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let config = every_service_on_a_free_port(work.path());
    let services = [
        "gateway",
        "identity",
        "customers",
        "inventory",
        "orders",
        "payments",
        "notifications",
    ];
    let up = Process::spawn(
        &["up", "--data-dir", data.to_str().unwrap(), "--config", &config],
        &[],
        &services,
    )
    .await;
    let http = reqwest::Client::new();
    // A family shows once it has a series: one checkout gives every one of them its first.
    let order = crate::tracing::settled_order(&http, up.url("gateway")).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let mut exposed = String::new();
    for service in services {
        exposed += &metrics_of(&http, up.url(service)).await.expect("metrics answer");
    }
    let missing: Vec<&String> = named
        .iter()
        .filter(|name| !exposed.contains(&format!("# TYPE {name} ")))
        .collect();
    assert!(missing.is_empty(), "named but not exposed: {missing:?}");
    assert!(up.terminate().await.success());
}
