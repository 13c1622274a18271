//! `GetCustomer`, the internal API orders calls at checkout, on the HTTP listener.

use mercato_contracts::grpc::customers::GetCustomerRequest;
use mercato_contracts::grpc::customers::customers_client::CustomersClient;
use mercato_testkit::{TestBackend, backend_tests};
use serde_json::json;

use crate::support::{spawn_app, user_id};

backend_tests!(get_customer_answers_the_profile_and_refuses_bad_ids);

async fn get_customer_answers_the_profile_and_refuses_bad_ids(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let user = user_id();
    app.customer(&user).await;
    let change = json!({"addresses": [{"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}]});
    assert_eq!(app.patch_me(&user, &change).await.status(), 200);

    let mut client = CustomersClient::connect(app.url(""))
        .await
        .expect("connect over HTTP/2");
    let customer = client
        .get_customer(GetCustomerRequest {
            customer_id: user.clone(),
        })
        .await
        .expect("GetCustomer")
        .into_inner();
    assert_eq!(customer.id, user);
    assert_eq!(customer.email, format!("{user}@example.com"));
    assert_eq!(customer.addresses.len(), 1);
    assert_eq!(customer.addresses[0].country, "DE");
    assert_eq!(customer.preferences.expect("preferences").locale, "en");

    let unknown = client
        .get_customer(GetCustomerRequest {
            customer_id: user_id(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let empty = client
        .get_customer(GetCustomerRequest {
            customer_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
}
