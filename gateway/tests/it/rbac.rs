use mercato_gateway::{RouteAuth, RouteConfig, RuleConfig};
use mercato_testkit::problem::challenge;
use reqwest::Method;

use crate::support::{TestGateway, echoed, expect_problem_of, seen_header, spawn_gateway_with};

/// The standard routes plus a public catalogue whose changes need an admin, orders whose shipping
/// needs an admin, and a staff area open to admins and support.
async fn guarded_gateway() -> TestGateway {
    spawn_gateway_with(|config| {
        let gateway = &mut config.gateway;
        gateway
            .routes
            .push(RouteConfig::new("/api/catalogue", "echo", RouteAuth::Public));
        gateway
            .routes
            .push(RouteConfig::new("/api/shop-orders", "echo", RouteAuth::Required));
        gateway.routes.push(
            RouteConfig::new("/api/staff", "echo", RouteAuth::Required).with_roles(&["admin", "support"]),
        );
        gateway.rules = vec![
            RuleConfig::new("/api/catalogue", &["PUT", "POST", "DELETE", "PATCH"], &["admin"]),
            RuleConfig::new("/api/shop-orders/*/ship", &[], &["admin"]),
        ];
    })
    .await
}

async fn send(gateway: &TestGateway, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = gateway.http.request(method, gateway.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_customer_token_on_an_admin_rule_is_forbidden() {
    let gateway = guarded_gateway().await;
    let customer = gateway.token("cus-1", &["customer"]);

    let response = send(
        &gateway,
        Method::PUT,
        "/api/catalogue/SKU-1/stock",
        Some(&customer),
    )
    .await;

    let body = expect_problem_of(response, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");
    assert_eq!(
        gateway.echo.hits(),
        0,
        "a forbidden request never reaches the upstream"
    );
}

#[tokio::test]
async fn no_token_on_an_admin_rule_of_a_public_route_is_challenged_with_401() {
    let gateway = guarded_gateway().await;

    let response = send(&gateway, Method::POST, "/api/catalogue/SKU-1/price", None).await;

    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="mercato""#
    );
    expect_problem_of(response, 401, "unauthorized").await;
    assert_eq!(gateway.echo.hits(), 0);
}

#[tokio::test]
async fn a_bad_token_on_an_admin_rule_is_refused_as_invalid() {
    let gateway = guarded_gateway().await;

    let response = send(&gateway, Method::DELETE, "/api/catalogue/SKU-1", Some("a.b.c")).await;

    let challenge = challenge(&response);
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
    expect_problem_of(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn an_admin_passes_the_rule_with_the_verified_identity() {
    let gateway = guarded_gateway().await;
    let admin = gateway.token("adm-1", &["customer", "admin"]);

    let seen = echoed(send(&gateway, Method::PUT, "/api/catalogue/SKU-1/stock", Some(&admin)).await).await;

    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen_header(&seen, "x-auth-subject"), ["adm-1"]);
    assert_eq!(seen_header(&seen, "x-auth-roles"), ["customer,admin"]);
}

#[tokio::test]
async fn browsing_a_guarded_public_route_stays_public() {
    let gateway = guarded_gateway().await;

    let list = echoed(send(&gateway, Method::GET, "/api/catalogue", None).await).await;
    let one = echoed(send(&gateway, Method::GET, "/api/catalogue/SKU-1", None).await).await;

    assert_eq!(list["method"], "GET");
    assert!(seen_header(&one, "x-auth-subject").is_empty());
    assert_eq!(gateway.echo.hits(), 2);
}

#[tokio::test]
async fn a_wildcard_rule_guards_the_action_and_nothing_beside_it() {
    let gateway = guarded_gateway().await;
    let customer = gateway.token("cus-1", &["customer"]);
    let admin = gateway.token("adm-1", &["admin"]);

    for path in [
        "/api/shop-orders/42/ship",
        "/api/shop-orders/42/%73hip",
        "/api/shop-orders/42/ship/",
    ] {
        let refused = send(&gateway, Method::POST, path, Some(&customer)).await;
        expect_problem_of(refused, 403, "forbidden").await;
    }
    echoed(send(&gateway, Method::POST, "/api/shop-orders/42/ship", Some(&admin)).await).await;
    // Beside the guarded action, not under it.
    for path in ["/api/shop-orders/42/cancel", "/api/shop-orders/42/shipping"] {
        echoed(send(&gateway, Method::POST, path, Some(&customer)).await).await;
    }
    echoed(send(&gateway, Method::GET, "/api/shop-orders/42", Some(&customer)).await).await;
    assert_eq!(gateway.echo.hits(), 4);
}

#[tokio::test]
async fn a_route_with_roles_admits_any_one_of_them() {
    let gateway = guarded_gateway().await;
    let support = gateway.token("sup-1", &["support"]);
    let admin = gateway.token("adm-1", &["admin"]);
    let customer = gateway.token("cus-1", &["customer"]);

    echoed(send(&gateway, Method::GET, "/api/staff/queue", Some(&support)).await).await;
    echoed(send(&gateway, Method::GET, "/api/staff/queue", Some(&admin)).await).await;
    let refused = send(&gateway, Method::GET, "/api/staff/queue", Some(&customer)).await;

    let body = expect_problem_of(refused, 403, "forbidden").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("admin") && detail.contains("support"), "{detail}");
}
