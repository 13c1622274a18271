//! The client's address comes from forwarding headers only when the peer is a trusted proxy: a
//! forged `X-Forwarded-For` neither reaches an upstream nor escapes a rate limit.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use mercato_gateway::{Config, RateClassConfig};

use crate::support::{TestGateway, client_from, echoed, expect_problem_of, seen_header, spawn_gateway_with};

/// One request per address at a time, so a second request from one client is refused.
fn one_per_client(config: &mut Config, trusted: &[&str]) {
    config.gateway.rate_limit.classes = BTreeMap::from([(
        "default".into(),
        RateClassConfig {
            rate_per_second: 1,
            burst: 1,
        },
    )]);
    config.gateway.trusted_proxies = trusted.iter().map(|t| (*t).to_owned()).collect();
}

/// Sends one request per case, in order, from `client`, and checks that each is answered with
/// its status.
async fn expect_statuses(gateway: &TestGateway, client: &reqwest::Client, cases: &[((&str, &str), u16)]) {
    for &(header, expected) in cases {
        assert_eq!(status(gateway, client, header).await, expected, "{header:?}");
    }
}

async fn status(gateway: &TestGateway, client: &reqwest::Client, header: (&str, &str)) -> u16 {
    let response = client
        .get(gateway.url("/api/echo/items"))
        .header(header.0, header.1)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 429 {
        expect_problem_of(response, 429, "rate-limited").await;
    }
    status
}

#[tokio::test]
async fn a_forged_x_forwarded_for_from_an_untrusted_peer_does_not_escape_the_limit() {
    let gateway = spawn_gateway_with(|c| one_per_client(c, &[])).await;

    expect_statuses(
        &gateway,
        &gateway.http,
        &[
            (("x-forwarded-for", "203.0.113.1"), 200),
            (("x-forwarded-for", "203.0.113.2"), 429),
            (("forwarded", "for=203.0.113.3"), 429),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_untrusted_peers_forwarding_headers_are_replaced_by_its_address() {
    let gateway = spawn_gateway_with(|c| c.gateway.trusted_proxies = vec!["10.0.0.0/8".into()]).await;

    let seen = gateway
        .seen_upstream(
            "/api/echo/items",
            &[
                ("x-forwarded-for", "203.0.113.7, 198.51.100.2"),
                ("forwarded", "for=203.0.113.7"),
            ],
        )
        .await;

    assert_eq!(seen_header(&seen, "x-forwarded-for"), ["127.0.0.1"], "{seen}");
    assert!(seen_header(&seen, "forwarded").is_empty(), "{seen}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let gateway = spawn_gateway_with(|c| one_per_client(c, &["127.0.0.1/32"])).await;
    let proxy = &gateway.http;

    expect_statuses(
        &gateway,
        proxy,
        &[
            (("x-forwarded-for", "203.0.113.7"), 200),
            (("x-forwarded-for", "203.0.113.7"), 429),
            // A client that put its own entry in front is still the hop the proxy saw.
            (("x-forwarded-for", "203.0.113.9, 203.0.113.7"), 429),
            (("x-forwarded-for", "203.0.113.8"), 200),
            (("forwarded", "for=\"[2001:db8::1]:443\""), 200),
            (("forwarded", "for=2001:db8::1"), 429),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_trusted_proxys_chain_reaches_the_upstream_with_the_proxy_appended() {
    let gateway = spawn_gateway_with(|c| c.gateway.trusted_proxies = vec!["127.0.0.1".into()]).await;

    let response = gateway
        .get_with_header("/api/echo/items", "x-forwarded-for", "203.0.113.7, 198.51.100.2")
        .await;
    let seen = echoed(response).await;

    assert_eq!(
        seen_header(&seen, "x-forwarded-for"),
        ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
    );
}

#[tokio::test]
async fn a_peer_outside_the_trusted_networks_is_limited_by_its_own_address() {
    let gateway = spawn_gateway_with(|c| one_per_client(c, &["127.0.0.1/32"])).await;
    let outsider = client_from(Ipv4Addr::new(127, 0, 0, 2));

    expect_statuses(
        &gateway,
        &outsider,
        &[
            (("x-forwarded-for", "203.0.113.1"), 200),
            (("x-forwarded-for", "203.0.113.2"), 429),
        ],
    )
    .await;
    // The trusted proxy's client 203.0.113.1 was never charged by the outsider's claim.
    expect_statuses(
        &gateway,
        &gateway.http,
        &[(("x-forwarded-for", "203.0.113.1"), 200)],
    )
    .await;
}
