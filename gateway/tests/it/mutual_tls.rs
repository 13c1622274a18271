//! The gateway and `https://` upstreams served over mutual TLS: it presents its own certificate
//! and accepts only the service the upstream is named after, for proxied requests, health
//! checks and the console's calls alike.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use mercato_runtime::tls::CallingService;
use mercato_security::tls::TlsFiles;
use mercato_testkit::tls::{self, Pki, TlsServer};
use serde_json::{Value, json};

use mercato_testkit::eventually;

use crate::support::{PATIENCE, TestGateway, spawn_gateway_with};

/// Serves, over mutual TLS with `files`, a service that names its caller and lets only the
/// gateway in.
async fn serve_tls(files: &TlsFiles) -> TlsServer {
    let routes = Router::new().fallback(|request: Request| async move {
        let caller = request
            .extensions()
            .get::<CallingService>()
            .map(|c| c.0.service().to_owned());
        axum::Json(json!({ "caller": caller }))
    });
    let only_the_gateway = Arc::new(|caller: &str, _: &str, _: bool| caller == "gateway");
    tls::serve_tls(routes, files, only_the_gateway, false).await
}

/// A gateway holding its certificate, before `echo` (certified as echo) and `other`, an impostor
/// whose certificate names another service; returns it with both (serving while they live) and
/// the CA, whose files the certificates are reloaded from while it lives.
async fn gateway_over_tls(
    adjust: impl FnOnce(&mut mercato_gateway::Config),
) -> (TestGateway, TlsServer, TlsServer, Pki) {
    let pki = Pki::new();
    let echo = serve_tls(&pki.issue("echo")).await;
    let impostor = serve_tls(&pki.issue("inventory")).await;
    let gateway = pki.issue("gateway");
    let gw = spawn_gateway_with(|config| {
        config.upstreams.insert("echo".into(), vec![echo.url()]);
        config.upstreams.insert("other".into(), vec![impostor.url()]);
        config.tls = Some(gateway);
        adjust(config);
    })
    .await;
    (gw, echo, impostor, pki)
}

#[tokio::test]
async fn the_gateway_presents_its_certificate_and_reaches_only_the_service_it_names() {
    let (gw, _echo, _impostor, _pki) = gateway_over_tls(|_| {}).await;

    for _ in 0..3 {
        let response = gw.get("/api/echo/hello").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let seen: Value = response.json().await.unwrap();
        assert_eq!(seen["caller"], "gateway", "{seen}");
    }
    let refused = gw.get("/api/echo/special").send().await.unwrap();
    assert_eq!(refused.status(), 502);
}

#[tokio::test]
async fn health_checks_reach_tls_upstreams_over_tls_and_fail_an_impostor() {
    let (gw, echo, impostor, _pki) = gateway_over_tls(|config| {
        config.gateway.health_check.enabled = true;
        config.gateway.health_check.interval_ms = 50;
        config.gateway.health_check.unhealthy_threshold = 1;
    })
    .await;

    let healthy = |upstream: &str, url: &str, verdict: u8| {
        format!(r#"gateway_upstream_instance_healthy{{upstream="{upstream}",instance="{url}"}} {verdict}"#)
    };
    eventually(PATIENCE, "the impostor to fail its checks", || async {
        let metrics = gw.metrics().await;
        metrics
            .contains(&healthy("other", &impostor.url(), 0))
            .then_some(metrics)
    })
    .await;
    // Checked in the same rounds, over TLS, echo passes (one failure would have marked it).
    let metrics = gw.metrics().await;
    assert!(metrics.contains(&healthy("echo", &echo.url(), 1)), "{metrics}");
}

/// A client that trusts only `ca` and opens a new connection for every request.
fn trusting(ca: &std::path::Path) -> reqwest::Client {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(mercato_security::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A resumed session shows the certificate of the handshake it resumes.
    config.resumption = rustls::client::Resumption::disabled();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn presented(response: &reqwest::Response) -> Vec<u8> {
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

/// A gateway serving its clients over public TLS with `public`; `adjust` may change the rest.
async fn gateway_over_public_tls(
    public: &TlsFiles,
    adjust: impl FnOnce(&mut mercato_gateway::Config),
) -> TestGateway {
    spawn_gateway_with(|config| {
        config.gateway.edge.tls = Some(mercato_gateway::PublicTls {
            cert: public.cert.clone(),
            key: public.key.clone(),
            ca: None,
        });
        adjust(config);
    })
    .await
}

#[tokio::test]
async fn the_gateway_serves_clients_over_public_tls_and_picks_up_a_replaced_certificate() {
    let pki = Pki::new();
    let public = pki.issue("public");
    let gw = gateway_over_public_tls(&public, |_| {}).await;
    let url = format!("https://localhost:{}/api/echo/hello", gw.addr.port());
    let client = trusting(&public.ca);
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let before = presented(&first);

    let plaintext = reqwest::get(format!("http://{}/api/echo/hello", gw.addr)).await;
    assert!(
        plaintext.is_err(),
        "a plaintext client was answered: {plaintext:?}"
    );

    pki.rotate("public");
    eventually(
        PATIENCE,
        "new connections to present the new certificate",
        || async {
            let response = client.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            (presented(&response) != before).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_public_certificate_that_cannot_be_read_is_refused_at_start() {
    let pki = Pki::new();
    let public = pki.issue("public");
    let mut config = mercato_gateway::GatewayConfig::default();
    config.edge.tls = Some(mercato_gateway::PublicTls {
        cert: public.cert.clone(),
        key: public.cert.with_extension("missing"),
        ca: None,
    });
    let refused = config.edge.tls.unwrap().server_config().unwrap_err().to_string();
    assert!(refused.contains("missing"), "{refused}");
}

/// The console's latest reading of the gateway itself, once there is one, read over HTTPS
/// trusting `ca`.
async fn own_reading(gw: &TestGateway, ca: &std::path::Path) -> Value {
    let system = format!("https://localhost:{}/console/api/system", gw.addr.port());
    let page = system_page(gw, &trusting(ca), &system, |page| {
        latest(page, "gateway").is_object()
    })
    .await;
    instance(&page, "gateway").clone()
}

fn sampled_often(config: &mut mercato_gateway::Config) {
    config.gateway.console.enabled = true;
    config.gateway.console.sample_interval_ms = 100;
}

#[tokio::test]
async fn the_console_samples_the_gateway_over_https_when_it_serves_public_tls() {
    let pki = Pki::new();
    let public = pki.issue("public");
    let gw = gateway_over_public_tls(&public, |config| {
        // The CA trusted is `[tls]`'s, which issued the public certificate too.
        config.tls = Some(pki.issue("gateway"));
        sampled_often(config);
    })
    .await;
    let own = own_reading(&gw, &public.ca).await;
    assert_eq!(
        own["url"],
        format!("https://localhost:{}", gw.addr.port()),
        "{own}"
    );
    assert_eq!(own["latest"]["up"], true, "{own}");
    assert_eq!(own["latest"]["ready"]["status"], "ready", "{own}");
}

#[tokio::test]
async fn without_tls_to_the_services_the_sampler_trusts_the_ca_named_beside_the_public_certificate() {
    let pki = Pki::new();
    let public = pki.issue("public");
    let gw = gateway_over_public_tls(&public, |config| {
        if let Some(tls) = &mut config.gateway.edge.tls {
            tls.ca = Some(public.ca.clone());
        }
        sampled_often(config);
    })
    .await;
    let own = own_reading(&gw, &public.ca).await;
    assert_eq!(own["latest"]["up"], true, "{own}");
    assert_eq!(own["latest"]["ready"]["status"], "ready", "{own}");
}

/// The console's System page as an admin reads it through `client` at `url`, once `ready`
/// says it is complete.
async fn system_page(
    gw: &TestGateway,
    client: &reqwest::Client,
    url: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let admin = gw.token("admin-1", &["admin"]);
    eventually(PATIENCE, "the System page's readings", || async {
        let page: Value = client
            .get(url)
            .header("cookie", format!("mercato_console={admin}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        ready(&page).then_some(page)
    })
    .await
}

/// `upstream`'s instance on the System `page`.
fn instance<'a>(page: &'a Value, upstream: &str) -> &'a Value {
    page["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["upstream"] == upstream))
        .unwrap_or(&Value::Null)
}

/// The latest reading of `upstream`'s instance on the System `page`.
fn latest<'a>(page: &'a Value, upstream: &str) -> &'a Value {
    &instance(page, upstream)["latest"]
}

#[tokio::test]
async fn the_console_reads_tls_upstreams_as_the_gateway_and_only_the_service_each_names() {
    let (gw, _echo, _impostor, _pki) = gateway_over_tls(sampled_often).await;
    let system = gw.url("/console/api/system");
    let page = system_page(&gw, &gw.http, &system, |page| {
        latest(page, "echo").is_object() && latest(page, "other").is_object()
    })
    .await;
    let echo = latest(&page, "echo");
    assert_eq!(echo["up"], true, "{echo}");
    assert_eq!(echo["ready"]["status"], "ready", "{echo}");
    let other = latest(&page, "other");
    assert_eq!(other["up"], false, "{other}");
}

/// `GET /console/api/funnel` as an admin: the console reads orders' `/admin/funnel`.
async fn funnel(gw: &TestGateway) -> (u16, Value) {
    let admin = gw.token("admin-1", &["admin"]);
    let response = gw
        .get("/console/api/funnel")
        .header("cookie", format!("mercato_console={admin}"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_service_lets_the_console_in_only_as_the_gateway() {
    let pki = Pki::new();
    let orders = serve_tls(&pki.issue("orders")).await;
    // A gateway before orders, holding the certificate of `holder`.
    let holding = |holder: &str| {
        let files = pki.issue(holder);
        spawn_gateway_with(|config| {
            config.upstreams.insert("orders".into(), vec![orders.url()]);
            config.tls = Some(files);
            sampled_often(config);
        })
    };
    let (status, seen) = funnel(&holding("gateway").await).await;
    assert_eq!((status, &seen["caller"]), (200, &json!("gateway")), "{seen}");

    // A gateway holding another service's certificate is refused the admin endpoint, though
    // /ready, open to every certificate of the CA, still answers it.
    let as_notifications = holding("notifications").await;
    let (status, problem) = funnel(&as_notifications).await;
    assert_eq!(status, 403, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("spiffe://mercato/notifications may not call") && !detail.contains("token"),
        "the refusal names the certificate, not the token: {problem}"
    );
    let system = as_notifications.url("/console/api/system");
    let page = system_page(&as_notifications, &as_notifications.http, &system, |page| {
        latest(page, "orders").is_object()
    })
    .await;
    let reading = latest(&page, "orders");
    assert_eq!(reading["ready"]["status"], "ready", "{reading}");
}
