//! `GetCustomer` with `[service_tokens] enabled`: only a service token meant for customers, from
//! the trusted issuer and still valid, is served; and a customer API takes no service token.

use mercato_contracts::grpc::customers::GetCustomerRequest;
use mercato_contracts::grpc::customers::customers_client::CustomersClient;
use mercato_testkit::auth::TestIssuer;
use mercato_testkit::{TestBackend, backend_tests};
use tonic::Code;

use crate::support::{TestApp, spawn_app_with, user_id};

backend_tests!(
    get_customer_refuses_every_token_but_a_valid_service_token_for_customers,
    a_customer_api_refuses_a_service_token,
);

async fn spawn(backend: TestBackend) -> TestApp {
    spawn_app_with(backend, |config| config.service.service_tokens.enabled = true).await
}

async fn get_customer(app: &TestApp, token: Option<&str>, id: &str) -> Result<String, tonic::Status> {
    let mut client = CustomersClient::connect(app.url(""))
        .await
        .expect("connect over HTTP/2");
    let mut request = tonic::Request::new(GetCustomerRequest {
        customer_id: id.to_owned(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client.get_customer(request).await.map(|r| r.into_inner().id)
}

async fn get_customer_refuses_every_token_but_a_valid_service_token_for_customers(backend: TestBackend) {
    let app = spawn(backend).await;
    let user = user_id();
    app.customer(&user).await;
    let issuer = app.issuer();
    let stranger = TestIssuer::start().await;
    let mut expired = issuer.claims("orders", "customers");
    (expired.iat, expired.nbf, expired.exp) = (expired.iat - 900, expired.nbf - 900, expired.iat - 600);
    let mut foreign_issuer = issuer.claims("orders", "customers");
    foreign_issuer.iss = "someone-else".into();
    let refused = [
        ("no token", None, "needs a service token"),
        ("expired", Some(issuer.sign_service(&expired)), "expired"),
        (
            "for another service",
            Some(issuer.service_token("orders", "inventory")),
            "another audience",
        ),
        (
            "another issuer",
            Some(issuer.sign_service(&foreign_issuer)),
            "another issuer",
        ),
        (
            "an unknown key",
            Some(stranger.service_token("orders", "customers")),
            "unknown key",
        ),
        ("a customer's token", Some(app.token(&user)), "not of the type"),
    ];
    for (case, token, reason) in refused {
        let status = get_customer(&app, token.as_deref(), &user).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert!(status.message().contains(reason), "{case}: {status:?}");
    }
    let served = issuer.service_token("orders", "customers");
    assert_eq!(get_customer(&app, Some(&served), &user).await.unwrap(), user);
    let unknown = get_customer(&app, Some(&served), &user_id()).await.unwrap_err();
    assert_eq!(
        unknown.code(),
        Code::NotFound,
        "past the check, the API answers as before"
    );
}

async fn a_customer_api_refuses_a_service_token(backend: TestBackend) {
    let app = spawn(backend).await;
    let user = user_id();
    app.customer(&user).await;
    let service_token = app.issuer().service_token(&user, "mercato");
    let response = app.get_as("/api/customers/me", &service_token).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        app.get_as("/api/customers/me", &app.token(&user)).await.status(),
        200
    );
}
