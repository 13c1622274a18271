use crate::support::{echoed, seen_header, spawn_gateway};

#[tokio::test]
async fn identity_headers_from_the_client_never_reach_a_public_upstream() {
    let gateway = spawn_gateway().await;

    let seen = gateway
        .seen_upstream(
            "/api/echo/items",
            &[
                ("x-auth-subject", "admin"),
                ("X-Auth-Roles", "admin"),
                ("x-auth-roles", "root"),
            ],
        )
        .await;

    assert!(seen_header(&seen, "x-auth-subject").is_empty(), "{seen}");
    assert!(seen_header(&seen, "x-auth-roles").is_empty(), "{seen}");
}

#[tokio::test]
async fn identity_headers_from_the_client_are_replaced_by_the_verified_identity() {
    let gateway = spawn_gateway().await;
    let token = gateway.token("user-42", &["customer"]);

    let response = gateway
        .get("/api/private/orders")
        .bearer_auth(&token)
        .header("x-auth-subject", "admin")
        .header("x-auth-roles", "admin")
        .send()
        .await
        .unwrap();
    let seen = echoed(response).await;

    assert_eq!(seen_header(&seen, "x-auth-subject"), ["user-42"]);
    assert_eq!(seen_header(&seen, "x-auth-roles"), ["customer"]);
}

#[tokio::test]
async fn a_connection_header_cannot_strip_the_headers_the_gateway_sets() {
    let gateway = spawn_gateway().await;
    let token = gateway.token("user-42", &["customer"]);

    let response = gateway
        .get("/api/private/orders")
        .bearer_auth(&token)
        .header(
            "connection",
            "x-auth-subject, x-auth-roles, x-forwarded-for, x-correlation-id",
        )
        .header("x-correlation-id", "checkout-7f3a")
        .send()
        .await
        .unwrap();
    let seen = echoed(response).await;

    assert_eq!(seen_header(&seen, "x-auth-subject"), ["user-42"], "{seen}");
    assert_eq!(seen_header(&seen, "x-auth-roles"), ["customer"], "{seen}");
    assert_eq!(seen_header(&seen, "x-forwarded-for"), ["127.0.0.1"], "{seen}");
    assert_eq!(
        seen_header(&seen, "x-correlation-id"),
        ["checkout-7f3a"],
        "{seen}"
    );
}

#[tokio::test]
async fn the_client_address_is_added_to_x_forwarded_for() {
    let gateway = spawn_gateway().await;

    let seen = echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;

    assert_eq!(seen_header(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen_header(&seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        seen_header(&seen, "x-forwarded-host"),
        [gateway.addr.to_string().as_str()]
    );
}

#[tokio::test]
async fn a_client_correlation_id_reaches_the_upstream_and_is_echoed() {
    let gateway = spawn_gateway().await;

    let response = gateway
        .get_with_header("/api/echo/items", "x-correlation-id", "checkout-7f3a")
        .await;
    assert_eq!(response.headers()["x-correlation-id"], "checkout-7f3a");
    let seen = echoed(response).await;

    assert_eq!(seen_header(&seen, "x-correlation-id"), ["checkout-7f3a"]);
}

#[tokio::test]
async fn without_a_correlation_id_the_upstream_sees_the_generated_one_the_client_gets() {
    let gateway = spawn_gateway().await;

    let response = gateway.get("/api/echo/items").send().await.unwrap();
    let returned = response.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen = echoed(response).await;

    assert!(!returned.is_empty());
    assert_eq!(seen_header(&seen, "x-correlation-id"), [returned.as_str()]);
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_reach_the_upstream_but_end_to_end_headers_do() {
    let gateway = spawn_gateway().await;

    let seen = gateway
        .seen_upstream(
            "/api/echo/items",
            &[
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic c2VjcmV0"),
                ("x-end-to-end", "kept"),
                ("accept-language", "it"),
            ],
        )
        .await;

    for hop in ["x-hop", "keep-alive", "proxy-authorization"] {
        assert!(
            seen_header(&seen, hop).is_empty(),
            "{hop} reached the upstream: {seen}"
        );
    }
    assert!(
        seen_header(&seen, "connection")
            .iter()
            .all(|v| !v.contains("x-hop")),
        "{seen}"
    );
    assert_eq!(seen_header(&seen, "x-end-to-end"), ["kept"]);
    assert_eq!(seen_header(&seen, "accept-language"), ["it"]);
}
