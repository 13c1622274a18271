//! The checkout with `[service_tokens] enabled`: orders fetches its tokens from identity with its
//! own key and calls customers and inventory with them, and neither serves a call without one.

use std::os::unix::fs::PermissionsExt as _;

use mercato_contracts::grpc::customers::GetCustomerRequest;
use mercato_contracts::grpc::customers::customers_client::CustomersClient;
use mercato_contracts::grpc::inventory::GetProductsRequest;
use mercato_contracts::grpc::inventory::inventory_client::InventoryClient;
use mercato_testkit::{TestBackend, backend_tests, eventually};
use serde_json::{Value, json};

use crate::faults::{Cluster, VISA};
use crate::support::{PATIENCE, System, fresh, unique_email};

backend_tests!(with_service_tokens_an_order_is_confirmed_and_internal_apis_refuse_calls_without_one);

/// Both internal APIs at `customers` and `inventory` refuse a call that carries no token.
async fn internal_apis_refuse_a_call_without_a_token(customers: String, inventory: String) {
    let mut client = CustomersClient::connect(customers).await.unwrap();
    let refused = client
        .get_customer(GetCustomerRequest {
            customer_id: "anyone".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut client = InventoryClient::connect(inventory).await.unwrap();
    let refused = client
        .get_products(GetProductsRequest {
            skus: vec!["MUG-001".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
}

async fn with_service_tokens_an_order_is_confirmed_and_internal_apis_refuse_calls_without_one(
    backend: TestBackend,
) {
    let (_fixture, mut config) = fresh(backend).await;
    config.service_tokens.enabled = true;
    let system = System::start(config).await;
    let keys = &system.config.service_tokens.keys_dir;
    let private = std::fs::metadata(keys.join("orders.pem")).unwrap();
    assert_eq!(
        private.permissions().mode() & 0o777,
        0o600,
        "orders' own key is its own"
    );
    assert!(
        keys.join("orders.pub.jwk").exists(),
        "identity reads the public half"
    );

    let token = system.customer(&unique_email()).await;
    let body = json!({
        "items": [{"sku": "MUG-001", "quantity": 1}],
        "payment": {"card_token": "tok_visa"},
        "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    });
    let response = system
        .send_json(reqwest::Method::POST, "/api/orders", &token, &body)
        .await;
    assert_eq!(
        response.status(),
        201,
        "placing needs GetCustomer and GetProducts"
    );
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let done = eventually(PATIENCE, "the order to settle", || async {
        let order = system.try_get_json(&format!("/api/orders/{id}"), &token).await?;
        (order["status"] != "pending").then_some(order)
    })
    .await;
    assert_eq!(done["status"], "confirmed", "{done}");

    internal_apis_refuse_a_call_without_a_token(
        system.urls["customers"].clone(),
        system.urls["inventory"].clone(),
    )
    .await;
    system.stop().await;
}

/// Every service its own process, as deployed.
mod processes {
    mod postgres {
        use super::super::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn with_service_tokens_every_process_calls_with_its_token_and_the_checkout_confirms() {
            let cluster = Cluster::start(&[("MERCATO_SERVICE_TOKENS__ENABLED", "true")]).await;
            let shopper = cluster.customer().await;
            // Placing calls GetCustomer and GetProducts: a 201 means both took orders' tokens.
            let [order] = cluster.place(&shopper, &[VISA]).await.try_into().unwrap();
            let confirmed = cluster.confirmed(&shopper, &order.id).await;
            assert_eq!(confirmed["payment"]["status"], "captured", "{confirmed}");
            internal_apis_refuse_a_call_without_a_token(
                cluster.url("customers", ""),
                cluster.url("inventory", ""),
            )
            .await;
            cluster.stop().await;
        }
    }
}
