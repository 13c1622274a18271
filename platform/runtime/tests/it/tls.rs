//! The server and `ServiceClient` over mutual TLS: who is served, who is refused and how, and a
//! certificate rotated while calls flow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use http::StatusCode;
use mercato_runtime::tls::{Allow, CallingService, client_for};
use mercato_runtime::{CancellationToken, ClientConfig, ClientMetrics, ServiceClient};
use mercato_testkit::eventually;
use mercato_testkit::problem::expect_problem_of;
use mercato_testkit::tls::{Pki, TlsServer, serve_tls};
use rustls_pki_types::ServerName;

use crate::support::PATIENCE;

/// The gateway may call HTTP routes, orders the one gRPC method `/test.Svc/Read`.
fn allow() -> Allow {
    Arc::new(|caller: &str, path: &str, grpc: bool| {
        if grpc {
            caller == "orders" && path == "/test.Svc/Read"
        } else {
            caller == "gateway"
        }
    })
}

struct TlsApp {
    server: TlsServer,
    addr: SocketAddr,
    pki: Pki,
}

impl TlsApp {
    fn url(&self) -> String {
        self.server.url()
    }

    /// A client presenting `caller`'s certificate from this app's CA, expecting `inventory`.
    fn client(&self, caller: &str) -> ServiceClient {
        client_of(&self.pki, caller, &self.url())
    }
}

fn client_of(pki: &Pki, caller: &str, url: &str) -> ServiceClient {
    let tls = client_for(&pki.issue(caller), "inventory").unwrap();
    let config = ClientConfig {
        // A new connection, and so a full handshake, for every call.
        pool_max_idle_per_host: 0,
        ..ClientConfig::default()
    };
    ServiceClient::with_tls("inventory", url, &config, &ClientMetrics::default(), &tls).unwrap()
}

async fn caller(Extension(CallingService(identity)): Extension<CallingService>) -> String {
    identity.to_string()
}

/// Inventory over mutual TLS, with a plaintext probe port when `probe`.
async fn spawn_tls_app_with(probe: bool) -> TlsApp {
    let pki = Pki::new();
    let routes = Router::new()
        .route("/caller", get(caller))
        .route("/test.Svc/Read", axum::routing::post(|| async { "read" }))
        .route("/test.Svc/Write", axum::routing::post(|| async { "written" }));
    let server = serve_tls(routes, &pki.issue("inventory"), allow(), probe).await;
    TlsApp {
        addr: server.addr,
        server,
        pki,
    }
}

async fn spawn_tls_app() -> TlsApp {
    spawn_tls_app_with(false).await
}

#[tokio::test]
async fn the_caller_is_named_by_its_certificate_and_checked_against_the_allow_list() {
    let app = spawn_tls_app().await;
    let answer = app.client("gateway").get("/caller").send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "spiffe://mercato/gateway");

    let refused = app.client("orders").get("/caller").send().await.unwrap();
    let problem = expect_problem_of(refused, 403, "forbidden").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("spiffe://mercato/orders") && detail.contains("/caller"),
        "{detail}"
    );

    // Health, readiness and metrics are open to every service of the CA.
    for path in ["/health", "/ready", "/metrics"] {
        let answer = app.client("notifications").get(path).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_grpc_call_outside_the_allow_list_is_permission_denied() {
    let app = spawn_tls_app().await;
    let grpc = |caller: &str, path: &str| {
        let client = app.client(caller);
        let path = path.to_owned();
        async move {
            client
                .post(&path)
                .header("content-type", "application/grpc")
                .send()
                .await
                .unwrap()
        }
    };
    let served = grpc("orders", "/test.Svc/Read").await;
    assert_eq!(served.status(), StatusCode::OK);
    assert!(served.headers().get("grpc-status").is_none());
    assert_eq!(served.text().await.unwrap(), "read");

    for (caller, path) in [
        ("orders", "/test.Svc/Write"),
        ("notifications", "/test.Svc/Read"),
        ("gateway", "/test.Svc/Read"),
    ] {
        let refused = grpc(caller, path).await;
        assert_eq!(refused.headers()["grpc-status"], "7", "{caller} {path}");
        let message = refused.headers()["grpc-message"].to_str().unwrap().to_owned();
        assert!(message.contains(caller), "{message}");
    }
}

#[tokio::test]
async fn plaintext_anonymous_foreign_and_misnamed_peers_get_no_answer() {
    let app = spawn_tls_app().await;
    let plain = mercato_testkit::service::http_client();
    assert!(
        plain
            .get(format!("http://{}/health", app.addr))
            .send()
            .await
            .is_err()
    );

    let ca = reqwest::Certificate::from_pem(&std::fs::read(app.pki.issue("gateway").ca).unwrap()).unwrap();
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/health", app.addr.port());
    assert!(
        anonymous.get(&url).send().await.is_err(),
        "served a client without a certificate"
    );

    let other_ca = Pki::new();
    let foreign = client_of(&other_ca, "gateway", &app.url());
    assert!(
        foreign.get("/health").send().await.is_err(),
        "served a certificate of another CA"
    );

    // The client's side: a server presenting another service's certificate is not trusted.
    let tls = client_for(&app.pki.issue("gateway"), "customers").unwrap();
    let misnamed = ServiceClient::with_tls(
        "customers",
        &app.url(),
        &ClientConfig::default(),
        &ClientMetrics::default(),
        &tls,
    )
    .unwrap();
    assert!(
        misnamed.get("/health").send().await.is_err(),
        "trusted inventory as customers"
    );
}

/// The certificate the server presents to a new connection.
async fn presented(app: &TlsApp) -> Vec<u8> {
    let tls = client_for(&app.pki.issue("probe"), "inventory").unwrap();
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_certificate_replaced_under_load_is_used_by_new_connections_and_no_call_fails() {
    let app = Arc::new(spawn_tls_app().await);
    let before = presented(&app).await;
    let served = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let load = {
        let client = app.client("gateway");
        let (served, stop) = (Arc::clone(&served), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let answer = client
                    .get("/caller")
                    .send()
                    .await
                    .expect("a call failed during rotation");
                assert_eq!(answer.status(), StatusCode::OK);
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let flowing = |past: u64| {
        let served = Arc::clone(&served);
        move || {
            let n = served.load(Ordering::Relaxed);
            async move { (n > past).then_some(()) }
        }
    };
    eventually(PATIENCE, "calls flowing", flowing(5)).await;

    app.pki.rotate("inventory");
    app.pki.rotate("gateway");
    eventually(PATIENCE, "the new certificate presented", || {
        let (app, before) = (Arc::clone(&app), before.clone());
        async move { (presented(&app).await != before).then_some(()) }
    })
    .await;
    let at_rotation = served.load(Ordering::Relaxed);
    eventually(
        PATIENCE,
        "calls flowing after the rotation",
        flowing(at_rotation + 5),
    )
    .await;
    stop.cancel();
    load.await
        .expect("no call failed while the certificates were replaced");
}

#[tokio::test]
async fn the_probe_port_answers_health_and_readiness_in_plaintext_and_nothing_else() {
    let app = spawn_tls_app_with(true).await;
    let probe = app.server.probe.expect("a probe port");
    assert_ne!(probe, app.addr);
    let plain = mercato_testkit::service::http_client();
    for path in ["/health", "/ready"] {
        let answer = plain.get(format!("http://{probe}{path}")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
    }
    for path in ["/metrics", "/caller", "/test.Svc/Read", "/"] {
        let refused = plain.get(format!("http://{probe}{path}")).send().await.unwrap();
        expect_problem_of(refused, 404, "not-found").await;
    }
    let refused = plain
        .post(format!("http://{probe}/test.Svc/Read"))
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::NOT_FOUND,
        "no gRPC on the probe port"
    );
    let refused = plain.post(format!("http://{probe}/health")).send().await.unwrap();
    expect_problem_of(refused, 405, "method-not-allowed").await;

    // The main port still serves only holders of a certificate from the CA.
    assert!(
        plain
            .get(format!("http://{}/health", app.addr))
            .send()
            .await
            .is_err(),
        "the main port answered in plaintext"
    );
    let answer = app.client("gateway").get("/caller").send().await.unwrap();
    assert_eq!(answer.text().await.unwrap(), "spiffe://mercato/gateway");
}
