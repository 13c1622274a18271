//! `GetProducts` with `[tls]` on: the caller is named by its certificate and only orders may
//! read products; peers without a certificate from the CA get no answer at all.

use mercato_contracts::grpc::inventory::GetProductsRequest;
use mercato_contracts::grpc::inventory::inventory_client::InventoryClient;
use mercato_inventory::{Config, InventoryConfig};
use mercato_kit::ServiceSettings;
use mercato_runtime::tls::{channel, client_for};
use mercato_testkit::service::{Backing, Instance};
use mercato_testkit::tls::Pki;
use mercato_testkit::{TestBackend, backend_tests};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

backend_tests!(only_orders_reads_products_and_only_over_mutual_tls);

fn client(pki: &Pki, caller: &str, url: &str) -> InventoryClient<Channel> {
    let tls = client_for(&pki.issue(caller), "inventory").unwrap();
    InventoryClient::new(channel(
        &Endpoint::from_shared(url.to_owned()).unwrap(),
        Some(&tls),
    ))
}

fn read() -> GetProductsRequest {
    GetProductsRequest {
        skus: vec!["MUG-001".into()],
    }
}

async fn only_orders_reads_products_and_only_over_mutual_tls(backend: TestBackend) {
    let backing = Backing::new(backend).await;
    let pki = Pki::new();
    let config = Config {
        service: ServiceSettings {
            tls: pki.settings("inventory"),
            ..backing.settings()
        },
        inventory: InventoryConfig {
            reservation_sweep_ms: 50,
            demo_catalogue: true,
        },
    };
    let instance = Instance::run(mercato_inventory::build(&config, backing.bus().await).await);
    let url = format!("https://{}", instance.addr);

    let products = client(&pki, "orders", &url)
        .get_products(read())
        .await
        .expect("orders reads products")
        .into_inner()
        .products;
    assert_eq!(products[0].sku, "MUG-001");

    for caller in ["notifications", "gateway", "customers"] {
        let refused = client(&pki, caller, &url).get_products(read()).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{caller}: {refused:?}");
        assert!(
            refused.message().contains(&format!("spiffe://mercato/{caller}")),
            "{refused:?}"
        );
    }

    let plaintext = InventoryClient::connect(format!("http://{}", instance.addr)).await;
    if let Ok(mut plaintext) = plaintext {
        plaintext
            .get_products(read())
            .await
            .expect_err("answered a plaintext client");
    }
    let other_ca = Pki::new();
    client(&other_ca, "orders", &url)
        .get_products(read())
        .await
        .expect_err("answered a certificate of another CA");
}
