use mercato_gateway::{RouteAuth, RouteConfig};

use crate::support::{TestGateway, echoed, expect_problem_of, spawn_gateway, spawn_gateway_with};

#[tokio::test]
async fn a_public_route_reaches_its_upstream_without_a_token() {
    let gateway = spawn_gateway().await;

    let seen = echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;

    assert_eq!(seen["upstream"], "echo");
    assert_eq!(seen["method"], "GET");
    assert_eq!(gateway.echo.hits(), 1);
}

#[tokio::test]
async fn the_path_and_query_string_reach_the_upstream_unchanged() {
    let gateway = spawn_gateway().await;
    let path = "/api/echo/items/a%20b/c?x=1&y=two%20words&x=2&empty=";

    let seen = echoed(gateway.get(path).send().await.unwrap()).await;

    assert_eq!(seen["uri"], path);
}

#[tokio::test]
async fn every_method_and_its_body_are_forwarded() {
    let gateway = spawn_gateway().await;
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let response = gateway
            .http
            .request(method.clone(), gateway.url("/api/echo/items/1"))
            .body("twelve bytes")
            .send()
            .await
            .unwrap();
        let seen = echoed(response).await;
        assert_eq!(seen["method"], method.as_str());
        assert_eq!(seen["body_len"], 12, "{method}");
    }
}

#[tokio::test]
async fn the_longest_matching_prefix_wins() {
    let gateway = spawn_gateway().await;

    let special = echoed(gateway.get("/api/echo/special/x").send().await.unwrap()).await;
    let exact = echoed(gateway.get("/api/echo/special").send().await.unwrap()).await;
    let sibling = echoed(gateway.get("/api/echo/specialx").send().await.unwrap()).await;
    // A public route nested in an authenticated one needs no token; its parent still does.
    let status = echoed(gateway.get("/api/private/status").send().await.unwrap()).await;
    let parent = gateway.get("/api/private/orders").send().await.unwrap();

    assert_eq!(special["upstream"], "other");
    assert_eq!(exact["upstream"], "other");
    assert_eq!(sibling["upstream"], "echo");
    assert_eq!(status["upstream"], "echo");
    expect_problem_of(parent, 401, "unauthorized").await;
    assert_eq!(gateway.other.hits(), 2);
}

#[tokio::test]
async fn a_prefix_matches_whole_path_segments_only() {
    let gateway = spawn_gateway().await;

    let exact = gateway.get("/api/echo").send().await.unwrap();
    let trailing_slash = gateway.get("/api/echo/").send().await.unwrap();
    let longer_segment = gateway.get("/api/echox").send().await.unwrap();

    echoed(exact).await;
    echoed(trailing_slash).await;
    expect_problem_of(longer_segment, 404, "not-found").await;
    assert_eq!(gateway.echo.hits(), 2);
}

#[tokio::test]
async fn an_unknown_path_is_a_404_problem_that_reaches_no_upstream() {
    let gateway = spawn_gateway().await;

    for path in ["/nothing/here", "/api", "/", "/apiecho"] {
        let body = expect_problem_of(gateway.get(path).send().await.unwrap(), 404, "not-found").await;
        assert!(body["detail"].is_string(), "{body}");
    }

    assert_eq!(gateway.echo.hits() + gateway.other.hits(), 0);
}

async fn catch_all_gateway() -> TestGateway {
    spawn_gateway_with(|config| {
        config
            .gateway
            .routes
            .push(RouteConfig::new("/", "other", RouteAuth::Public));
    })
    .await
}

#[tokio::test]
async fn health_ready_and_metrics_are_the_gateways_own_even_under_a_catch_all_route() {
    let gateway = catch_all_gateway().await;

    let health = gateway.get("/health").send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<serde_json::Value>().await.unwrap()["status"], "ok");

    let ready = gateway.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["status"], "ready", "{report}");
    assert_eq!(report["checks"][0]["name"], "jwks", "{report}");
    assert_eq!(report["checks"][0]["status"], "up", "{report}");

    let metrics = gateway.get("/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let content_type = metrics.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );

    // So is the OpenAPI description of the public API, without a token.
    let openapi = gateway.get("/api/openapi.json").send().await.unwrap();
    assert_eq!(openapi.status(), 200);
    let doc: serde_json::Value = openapi.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(gateway.other.hits(), 0, "not proxied");

    // The catch-all does serve everything else.
    let seen = echoed(gateway.get("/anything/else").send().await.unwrap()).await;
    assert_eq!(seen["upstream"], "other");
    assert_eq!(gateway.other.hits(), 1);
}

#[tokio::test]
async fn the_admin_api_is_the_gateways_own_under_a_catch_all_route_but_not_names_that_only_begin_like_it() {
    let gateway = catch_all_gateway().await;

    let admin = gateway.get("/admin/upstreams").send().await.unwrap();
    expect_problem_of(admin, 401, "unauthorized").await;
    let posted = gateway.post("/health").send().await.unwrap();
    assert_eq!(
        posted.status(),
        405,
        "the gateway's own route, for another method"
    );
    assert_eq!(gateway.other.hits(), 0, "not proxied");

    // A path below the admin API that none of its routes serves is still proxied.
    for path in [
        "/admin/elsewhere",
        "/administration",
        "/healthz",
        "/api/openapi.json/x",
    ] {
        let seen = echoed(gateway.get(path).send().await.unwrap()).await;
        assert_eq!(seen["uri"], path);
    }
    assert_eq!(gateway.other.hits(), 4);
    // Labelled by their route alike, through the router or not.
    let text = gateway.metrics().await;
    let line = r#"http_requests_total{method="GET",route="/",status_code="200"} 4"#;
    assert!(
        text.contains(line),
        "missing {line} in
{text}"
    );
}

#[tokio::test]
async fn metrics_label_proxied_requests_with_the_route_prefix_not_the_path() {
    let gateway = spawn_gateway().await;
    for path in ["/api/echo/items/1", "/api/echo/items/2?q=x"] {
        echoed(gateway.get(path).send().await.unwrap()).await;
    }
    let unauthorized = gateway.get("/api/private/orders").send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    let unknown = gateway.get("/nothing/here").send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    let text = gateway.metrics().await;

    for line in [
        r#"http_requests_total{method="GET",route="/api/echo",status_code="200"} 2"#,
        r#"http_requests_total{method="GET",route="/api/private",status_code="401"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status_code="404"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("/items/"), "{text}");
    assert!(!text.contains("/nothing/here"), "{text}");
}
