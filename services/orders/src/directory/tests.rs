//! The directory's guards against a real gRPC server on a loopback port, served by the runtime
//! like inventory's own API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mercato_contracts::grpc::inventory::inventory_server::{Inventory, InventoryServer};
use mercato_contracts::grpc::inventory::{GetProductsRequest, GetProductsResponse};
use mercato_runtime::resilience::Deadline;
use mercato_runtime::{
    CancellationToken, ClientConfig, ClientMetrics, HttpConfig, Readiness, Registry, Server, Service,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::{Directory, DirectoryError};

use mercato_testkit::PATIENCE;

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Answer,
    Unavailable,
    Stall,
}

/// An inventory that behaves as told and remembers what it was sent.
#[derive(Debug, Clone)]
struct FakeInventory {
    behaviour: Behaviour,
    calls: Arc<AtomicUsize>,
    deadlines: Arc<Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl Inventory for FakeInventory {
    async fn get_products(
        &self,
        request: Request<GetProductsRequest>,
    ) -> Result<Response<GetProductsResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let sent = (header("x-request-deadline-ms"), header("grpc-timeout"));
        self.deadlines.lock().unwrap().push(sent);
        match self.behaviour {
            Behaviour::Answer => Ok(Response::new(GetProductsResponse {
                products: Vec::new(),
                unknown_skus: request.into_inner().skus,
            })),
            Behaviour::Unavailable => Err(Status::unavailable("inventory is down")),
            Behaviour::Stall => std::future::pending().await,
        }
    }
}

struct Running {
    url: String,
    inventory: FakeInventory,
    shutdown: CancellationToken,
}

impl Running {
    fn calls(&self) -> usize {
        self.inventory.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_inventory(behaviour: Behaviour) -> Running {
    let inventory = FakeInventory {
        behaviour,
        calls: Arc::default(),
        deadlines: Arc::default(),
    };
    let routes = tonic::service::Routes::new(InventoryServer::new(inventory.clone())).into_axum_router();
    let service = Service {
        name: "inventory-under-test",
        routes,
        readiness: Readiness::new(),
        registry: Registry::default(),
        own_fallback: false,
    };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), &HttpConfig::default(), service)
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run_until_stopped(shutdown.clone()));
    Running {
        url,
        inventory,
        shutdown,
    }
}

fn directory(inventory: &Running, metrics: &ClientMetrics) -> Directory {
    // Customers is not called in these tests; a lazy channel never dials it.
    Directory::new(
        &inventory.url,
        "http://127.0.0.1:9",
        &ClientConfig::default(),
        metrics,
        None,
        &super::DirectoryTls::default(),
    )
    .unwrap()
}

fn skus() -> Vec<String> {
    vec!["MUG-001".to_owned()]
}

#[tokio::test]
async fn a_grpc_call_is_cut_when_the_callers_deadline_passes_and_the_server_saw_it() {
    let inventory = spawn_inventory(Behaviour::Stall).await;
    let directory = directory(&inventory, &ClientMetrics::default());

    let started = Instant::now();
    let deadline = Deadline::after(Duration::from_millis(300));
    let result = tokio::time::timeout(PATIENCE, deadline.scope(directory.products(skus())))
        .await
        .expect("the call ends by itself");
    let elapsed = started.elapsed();

    let Err(DirectoryError::Unavailable { reason, .. }) = result else {
        panic!("expected a failed call, got {result:?}");
    };
    // Cut by the deadline (the client's, or the server's answer to it at the same instant), not
    // by the call's own 10 s timeout.
    assert!(reason.starts_with("DeadlineExceeded"), "{reason}");
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let seen = inventory.inventory.deadlines.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "not retried past the deadline: {seen:?}");
    let (left, grpc_timeout) = &seen[0];
    let left: u64 = left.parse().expect("x-request-deadline-ms is milliseconds");
    assert!((1..=300).contains(&left), "{left}");
    assert_eq!(grpc_timeout, &format!("{left}m"));
}

#[tokio::test]
async fn a_grpc_request_whose_deadline_has_passed_is_refused_without_running_the_handler() {
    let inventory = spawn_inventory(Behaviour::Answer).await;
    let mut client =
        mercato_contracts::grpc::inventory::inventory_client::InventoryClient::connect(inventory.url.clone())
            .await
            .unwrap();
    let mut late = Request::new(GetProductsRequest { skus: skus() });
    late.metadata_mut()
        .insert("x-request-deadline-ms", "0".parse().unwrap());
    let status = client.get_products(late).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(inventory.calls(), 0);

    let answer = client
        .get_products(GetProductsRequest { skus: skus() })
        .await
        .unwrap();
    assert_eq!(answer.into_inner().unknown_skus, skus());
    assert_eq!(inventory.calls(), 1);
}

#[tokio::test]
async fn an_unavailable_inventory_is_retried_and_then_the_breaker_opens_and_fails_fast() {
    let inventory = spawn_inventory(Behaviour::Unavailable).await;
    let mut registry = Registry::default();
    let metrics = ClientMetrics::register(&mut registry);
    let directory = directory(&inventory, &metrics);

    let failed = directory.products(skus()).await.unwrap_err();
    assert!(matches!(failed, DirectoryError::Unavailable { .. }), "{failed:?}");
    assert_eq!(inventory.calls(), 3, "a read is tried three times");

    // Twenty failed attempts open the breaker (50 % of at least 20 calls).
    for _ in 0..6 {
        let _ = directory.products(skus()).await;
    }
    assert_eq!(inventory.calls(), 20, "the last call stopped at the open breaker");
    let started = Instant::now();
    let refused = directory.products(skus()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    assert!(refused.to_string().contains("circuit breaker"), "{refused}");
    assert_eq!(inventory.calls(), 20, "nothing more reached inventory");
    let text = mercato_runtime::metrics::render(&registry);
    assert!(
        text.contains(r#"circuit_breaker_state{name="inventory",state="open"} 1"#),
        "{text}"
    );
}
