//! `GetProducts` over gRPC, on the same listener as HTTP.

use mercato_contracts::grpc::inventory::inventory_client::InventoryClient;
use mercato_contracts::grpc::inventory::{GetProductsRequest, Money};
use mercato_testkit::{TestBackend, backend_tests};

use crate::support::{TestApp, expect_problem, far_future, spawn_app, spawn_for_an_order};

backend_tests!(spawn_app =>
    get_products_refuses_more_than_a_hundred_skus,
    http_still_works_beside_grpc;
    get_products_answers_prices_availability_and_unknown_skus,
);

async fn get_products_answers_prices_availability_and_unknown_skus(backend: TestBackend) {
    let (app, mut answers, order) = spawn_for_an_order(backend).await;
    app.reserve(&order, 1, &[("TEE-BLK-M", 5)], far_future()).await;
    answers.wait_for("StockReserved", |e| e.stream_id == order).await;

    let mut client = InventoryClient::connect(app.url(""))
        .await
        .expect("connect over HTTP/2");
    let request = GetProductsRequest {
        skus: vec![
            "tee-blk-m".into(),
            "NO-SUCH-THING".into(),
            "MUG-001".into(),
            "TEE-BLK-M".into(),
            "not a sku".into(),
        ],
    };
    let response = client
        .get_products(request)
        .await
        .expect("GetProducts")
        .into_inner();
    let skus: Vec<&str> = response.products.iter().map(|p| p.sku.as_str()).collect();
    assert_eq!(skus, ["TEE-BLK-M", "MUG-001"]);
    let tee = &response.products[0];
    assert_eq!(tee.name, "T-shirt, black, M");
    assert_eq!(
        tee.price,
        Some(Money {
            amount_minor: 2500,
            currency: "EUR".into()
        })
    );
    assert_eq!(tee.available, 75);
    assert_eq!(response.products[1].available, 100);
    assert_eq!(response.unknown_skus, ["not a sku", "NO-SUCH-THING"]);

    let empty = client
        .get_products(GetProductsRequest { skus: Vec::new() })
        .await
        .expect("an empty request")
        .into_inner();
    assert!(empty.products.is_empty() && empty.unknown_skus.is_empty());
}

async fn get_products_refuses_more_than_a_hundred_skus(app: TestApp) {
    let mut client = InventoryClient::connect(app.url("")).await.unwrap();
    let skus: Vec<String> = (0..101).map(|i| format!("SKU-{i}")).collect();
    let status = client
        .get_products(GetProductsRequest { skus })
        .await
        .expect_err("too many skus");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let hundred: Vec<String> = (0..100).map(|i| format!("SKU-{i}")).collect();
    let response = client
        .get_products(GetProductsRequest { skus: hundred })
        .await
        .expect("a hundred is fine")
        .into_inner();
    assert_eq!(response.unknown_skus.len(), 100);
}

async fn http_still_works_beside_grpc(app: TestApp) {
    let mut client = InventoryClient::connect(app.url("")).await.unwrap();
    client
        .get_products(GetProductsRequest {
            skus: vec!["MUG-001".into()],
        })
        .await
        .unwrap();
    assert_eq!(app.available("MUG-001").await, 100);
    expect_problem(app.get("/no/such/route").await, 404).await;
}
