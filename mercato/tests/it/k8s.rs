//! The Kubernetes manifests under `deploy/k8s`: what `mercato k8s` renders, the rules they keep,
//! and the ports and probe paths in them checked against the services really running.

use std::path::{Path, PathBuf};

use mercato::k8s::{self, manifests, model, policy};
use mercato::service_config;
use mercato::{Config, ServiceName, Sources};
use mercato_testkit::TestBackend;
use serde_json::Value;

use crate::support::{self, System};

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

fn default_config() -> Config {
    Config::default().prepared().expect("the defaults are valid")
}

fn rendered_objects() -> (model::System, Vec<Value>) {
    let system = model::System::from_config(&default_config());
    let objects = manifests::tree(&system).base_objects();
    (system, objects)
}

fn deployment<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

#[test]
fn committed_manifests_are_what_mercato_k8s_renders() {
    let files = k8s::render(&default_config()).unwrap();
    let stale = k8s::stale_files(&committed(), &files);
    assert!(
        stale.is_empty(),
        "deploy/k8s differs from the rendering in {stale:?}; run `cargo run -p mercato -- k8s`"
    );
}

#[tokio::test]
async fn k8s_check_names_a_file_that_drifted_and_passes_on_a_fresh_rendering() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k8s");
    let out_arg = out.to_str().unwrap();
    let (ok, stdout, stderr) = support::run(&["k8s", "--out", out_arg], &[]).await;
    assert!(ok, "{stdout}{stderr}");
    let (ok, stdout, stderr) = support::run(&["k8s", "--check", "--out", out_arg], &[]).await;
    assert!(ok, "{stdout}{stderr}");

    let orders = out.join("base/orders.yaml");
    let text = std::fs::read_to_string(&orders).unwrap();
    std::fs::write(&orders, text.replace("path: /ready", "path: /readyz")).unwrap();
    std::fs::write(out.join("overlays/dev/extra.yaml"), "kind: Secret\n").unwrap();
    let (ok, _, stderr) = support::run(&["k8s", "--check", "--out", out_arg], &[]).await;
    assert!(!ok);
    assert!(stderr.contains("base/orders.yaml"), "{stderr}");
    assert!(
        stderr.contains("overlays/dev/extra.yaml (not rendered)"),
        "{stderr}"
    );
}

#[test]
fn every_deployment_keeps_the_policies() {
    let (system, objects) = rendered_objects();
    assert_eq!(policy::check(&system, &objects), Vec::<String>::new());
    let kinds = |kind: &str| objects.iter().filter(|o| o["kind"] == kind).count();
    let services = ServiceName::ALL.len();
    assert_eq!(kinds("Deployment"), services);
    assert_eq!(kinds("PodDisruptionBudget"), services);
    assert_eq!(kinds("HorizontalPodAutoscaler"), services);
    assert_eq!(
        kinds("ServiceAccount"),
        services + 2,
        "one per service and setup job"
    );
    assert_eq!(kinds("Job"), 2, "migrations and streams");
    assert_eq!(kinds("Namespace"), 1);
}

#[test]
fn no_secret_value_is_in_the_manifests() {
    let (_, objects) = rendered_objects();
    assert!(!objects.iter().any(|o| o["kind"] == "Secret"));
    let text = serde_json::to_string(&objects).unwrap();
    assert!(!text.contains("PGPASSWORD"), "only the Secret holds the password");
    for url in ["postgres://", "redis://", "nats://"] {
        for found in text.match_indices(url) {
            let rest = &text[found.0 + url.len()..];
            let authority = rest.split(['/', '"']).next().unwrap();
            let userinfo = authority.rsplit_once('@').map_or("", |(u, _)| u);
            assert!(!userinfo.contains(':'), "a password in {url}{authority}");
        }
    }
    let identity = deployment(&objects, "identity");
    let volumes = identity["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains(manifests::KEYS_SECRET), "{volumes}");
}

/// Mebibytes in a quantity as the manifests write it (`"88Mi"`).
fn mib(quantity: &Value) -> u32 {
    let text = quantity.as_str().unwrap_or_default();
    text.strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a quantity in Mi: {quantity}"))
}

/// No pod is scheduled where the memory its service was measured at does not fit, and its
/// limit leaves room above that peak.
#[test]
fn every_pod_requests_at_least_its_measured_peak_memory_and_its_limit_leaves_headroom() {
    // README "Performance", with mimalloc: the peaks under load of the busiest services.
    let readme = [
        (ServiceName::Orders, 81),
        (ServiceName::Inventory, 67),
        (ServiceName::Identity, 59),
    ];
    for (service, peak) in readme {
        assert!(model::peak_memory_mib(service) >= peak, "{service:?}");
    }
    let (_, objects) = rendered_objects();
    for service in ServiceName::ALL {
        let name = service.as_str();
        let resources = &deployment(&objects, name)["spec"]["template"]["spec"]["containers"][0]["resources"];
        let (request, limit) = (
            mib(&resources["requests"]["memory"]),
            mib(&resources["limits"]["memory"]),
        );
        let peak = model::peak_memory_mib(*service);
        assert!(
            request >= peak + peak / 4,
            "{name}: requests {request} MiB, peaked at {peak}"
        );
        assert!(limit >= 2 * peak, "{name}: limit {limit} MiB, peaked at {peak}");
    }
}

/// Every pod but the sandbox's holds its own certificate from its own Secret and turns `[tls]`
/// on; those whose port takes only mutual TLS are reached over `https://` and probed in
/// plaintext on the probe port, which serves nothing else.
#[test]
fn every_service_but_the_sandbox_runs_with_its_own_certificate() {
    let (system, objects) = rendered_objects();
    let tree = manifests::tree(&system);
    let config = pods_config(&tree, &tree.toml);
    for service in ServiceName::ALL {
        let name = service.as_str();
        let pod = &deployment(&objects, name)["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let env = container["env"].to_string();
        let secret = format!("{}{name}", manifests::TLS_SECRET_PREFIX);
        let mounted = pod["volumes"].to_string().contains(&format!("\"{secret}\""));
        let sandbox = *service == ServiceName::PaymentSandbox;
        assert_eq!(mounted, !sandbox, "{name} mounts {secret}");
        assert_eq!(env.contains("MERCATO_TLS__ENABLED"), !sandbox, "{name}: {env}");
        let url = config.base_url(*service);
        let probe = &container["readinessProbe"]["httpGet"]["port"];
        if service.is_domain_service() {
            assert!(url.starts_with("https://"), "{name}: {url}");
            assert_eq!(probe, "probe", "{name}");
            assert!(env.contains("MERCATO_TLS__PROBE_LISTEN"), "{name}: {env}");
        } else {
            assert!(url.starts_with("http://"), "{name}: {url}");
            assert_eq!(probe, "http", "{name}");
        }
    }
}

/// The pods' configuration (the `mercato-env` ConfigMap and `mercato.toml`, the blue/green
/// overlay's too) loads and validates as `mercato serve` would load it, and puts every service on
/// the port its container exposes, on every interface.
#[test]
fn the_pods_configuration_loads_and_listens_on_the_container_ports() {
    let (system, objects) = rendered_objects();
    let tree = manifests::tree(&system);
    let prod = tree.overlays.iter().find(|o| o.overlay.name == "prod").unwrap();
    let blue_green = prod.toml.clone().expect("prod is blue/green");
    for toml in [&tree.toml, &blue_green] {
        let config = pods_config(&tree, toml);
        assert!(config.bus.is_nats(), "{}", config.bus.url);
        assert!(
            config.database.url.starts_with("postgres://"),
            "{}",
            config.database.url
        );
        assert!(!config.identity.generate_keys);
        for service in ServiceName::ALL {
            let listen = config.endpoint(*service).listen;
            assert!(listen.ip().is_unspecified(), "{service:?} listens on {listen}");
            let container =
                &deployment(&objects, service.as_str())["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(
                container["ports"][0]["containerPort"],
                listen.port(),
                "{service:?}"
            );
            assert_eq!(container["args"][1], service.as_str());
        }
    }
}

/// In the blue/green overlay the gateway has both groups of every upstream, blue live, and each
/// group's URL is a Service that selects only that track's pods.
#[test]
fn the_prod_gateway_switches_between_blue_and_green_services() {
    let (system, objects) = rendered_objects();
    let tree = manifests::tree(&system);
    let prod = tree.overlays.iter().find(|o| o.overlay.name == "prod").unwrap();
    let config = pods_config(&tree, prod.toml.as_ref().unwrap());
    let mut all = objects.clone();
    all.extend(prod.green.iter().cloned());
    assert_eq!(policy::check(&system, &all), Vec::<String>::new());
    for service in ServiceName::ALL.iter().filter(|s| s.is_domain_service()) {
        let name = service.as_str();
        let groups = &config.gateway.upstreams[name];
        assert_eq!(groups.green_percent, 0, "{name}: blue is live");
        for (urls, track) in [(&groups.blue, "blue"), (&groups.green, "green")] {
            let host = urls[0].trim_start_matches("https://").split(':').next().unwrap();
            let svc = all
                .iter()
                .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == host)
                .unwrap_or_else(|| panic!("no Service {host}"));
            assert_eq!(svc["spec"]["selector"][manifests::TRACK_LABEL], track, "{host}");
            assert_eq!(svc["spec"]["selector"]["app.kubernetes.io/name"], name);
        }
    }
}

/// The pods' configuration (the `mercato-env` ConfigMap and `toml` as `mercato.toml`) as
/// `mercato serve` loads it.
fn pods_config(tree: &manifests::Tree, toml: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mercato.toml");
    std::fs::write(&file, toml).unwrap();
    Config::load(&Sources {
        file: Some(file),
        env: tree.env.clone(),
        data_dir: None,
    })
    .expect("the pods' configuration is valid")
}

/// `(host, port)` of an `http://host:port/…` or `https://…` URL.
fn host_port(url: &str) -> (String, u16) {
    let authority = url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap();
    (host.to_owned(), port.parse().unwrap())
}

/// Where each service sends requests, read from the settings `mercato serve` gives it (the
/// JWKS, orders' gRPC peers, payments' provider, the gateway's upstreams), must be exactly what
/// its network policy lets it reach, and each callee must admit exactly those callers.
#[test]
fn network_policies_allow_exactly_the_calls_the_services_make() {
    let (system, objects) = rendered_objects();
    let tree = manifests::tree(&system);
    let config = pods_config(&tree, &tree.toml);
    let urls = service_config::configured_urls(&config);
    let calls = |service: ServiceName| -> Vec<String> {
        match service {
            ServiceName::Identity | ServiceName::PaymentSandbox => vec![],
            ServiceName::Customers => vec![service_config::customers(&config, &urls).service.jwks_url],
            ServiceName::Inventory => vec![service_config::inventory(&config, &urls).service.jwks_url],
            ServiceName::Notifications => {
                vec![service_config::notifications(&config, &urls).service.jwks_url]
            }
            ServiceName::Payments => {
                let c = service_config::payments(&config, &urls, false);
                vec![c.service.jwks_url, c.payments.provider.url]
            }
            ServiceName::Orders => {
                let c = service_config::orders(&config, &urls);
                vec![c.service.jwks_url, c.inventory_url, c.customers_url]
            }
            ServiceName::Gateway => {
                let c = service_config::gateway(&config, &urls);
                c.upstreams.into_values().flatten().chain([c.jwks_url]).collect()
            }
        }
    };
    let policy = |name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no NetworkPolicy {name}"))
    };
    let pod_targets = |rules: &Value| -> std::collections::BTreeSet<(String, u16)> {
        let mut out = std::collections::BTreeSet::new();
        for rule in rules.as_array().into_iter().flatten() {
            for peer in rule["to"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(rule["from"].as_array().into_iter().flatten())
            {
                if let Some(name) = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str() {
                    out.insert((name.to_owned(), rule["ports"][0]["port"].as_u64().unwrap() as u16));
                }
            }
        }
        out
    };
    for &service in ServiceName::ALL {
        let expected: std::collections::BTreeSet<(String, u16)> =
            calls(service).iter().map(|u| host_port(u)).collect();
        let allowed = pod_targets(&policy(service.as_str())["spec"]["egress"]);
        assert_eq!(allowed, expected, "{service:?} may reach other pods");

        let port = config.endpoint(service).listen.port();
        let callers: std::collections::BTreeSet<(String, u16)> = ServiceName::ALL
            .iter()
            .filter(|c| calls(**c).iter().any(|u| host_port(u).0 == service.as_str()))
            .map(|c| (c.as_str().to_owned(), port))
            .collect();
        let admitted = pod_targets(&policy(service.as_str())["spec"]["ingress"]);
        assert_eq!(admitted, callers, "who may reach {service:?}");
    }
}

/// Every probe in the manifests, sent to the services running in this process: liveness and
/// start-up answer 200 at once, readiness 200 once the dependencies answer.
#[tokio::test]
async fn every_probe_path_is_served_by_its_service() {
    let (_fixture, config) = support::fresh(TestBackend::Sqlite).await;
    let system = System::start(config).await;
    let (_, objects) = rendered_objects();
    let http = reqwest::Client::new();
    for service in ServiceName::ALL {
        let container = &deployment(&objects, service.as_str())["spec"]["template"]["spec"]["containers"][0];
        let base = &system.urls[service.as_str()];
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let path = container[probe]["httpGet"]["path"].as_str().unwrap().to_owned();
            let url = format!("{base}{path}");
            let http = http.clone();
            mercato_testkit::eventually(support::PATIENCE, &format!("{service:?} {probe} {url}"), || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let response = http.get(&url).send().await.ok()?;
                    (response.status() == 200).then_some(())
                }
            })
            .await;
        }
    }
    system.stop().await;
}

mod nats {
    use mercato_messaging::{Bus, BusConfig, ConsumerSpec};

    use super::*;

    /// The streams the setup job makes are the ones the bus uses: with them in place, every
    /// category's durable consumer is made on them and the dead-letter store binds (a stream of
    /// another name over the same subjects would be refused by the server).
    #[tokio::test]
    async fn the_streams_job_makes_the_streams_the_bus_uses() {
        let dir = tempfile::tempdir().unwrap();
        let server = mercato_testkit::nats::NatsServer::start(dir.path()).await;
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let streams = manifests::jetstream_streams();
        for (name, subjects) in &streams {
            js.create_stream(async_nats::jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![subjects.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        }

        let bus = Bus::connect(&BusConfig {
            url: server.url(),
            ..BusConfig::default()
        })
        .await
        .unwrap();
        for category in model::CATEGORIES {
            bus.consumer(&ConsumerSpec {
                group: format!("k8s-check-on-{category}"),
                category: (*category).to_owned(),
                event_types: Vec::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("the bus does not bind to the {category} stream: {e}"));
        }
        bus.dead_letters(1)
            .await
            .expect("the bus binds to the dead-letter stream");

        // Each durable consumer the bus made lives on the job's stream of its category.
        for (category, (name, _)) in model::CATEGORIES.iter().zip(&streams) {
            let stream = js.get_stream(name).await.unwrap();
            let group = format!("k8s-check-on-{category}");
            let info = stream.consumer_info(&group).await;
            assert!(info.is_ok(), "the {group} consumer is not on {name}: {info:?}");
        }
    }
}
