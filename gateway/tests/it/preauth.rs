//! Forged-token floods: an address whose tokens keep failing is refused before any token check,
//! while valid tokens, other addresses and public routes are unaffected.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use mercato_gateway::{Config, ManualClock};
use mercato_security::SigningKey;

use crate::support::{TestGateway, claims, client_from, expect_problem_of, sign, spawn_gateway_with_clock};

const PROTECTED: &str = "/api/private/orders";

/// Three failures at once, then one a second.
fn strict(config: &mut Config) {
    config.gateway.preauth.failure_burst = 3;
    config.gateway.preauth.failures_per_minute = 60;
    config.gateway.rate_limit.enabled = false;
}

async fn gateway(clock: &Arc<ManualClock>) -> TestGateway {
    spawn_gateway_with_clock(clock.clone(), strict).await
}

/// A token of the right shape whose signature no published key made.
fn forged(gateway: &TestGateway) -> String {
    let token = sign(&claims("mallory", &["admin"]), &SigningKey::generate());
    // The real key's id, so that the full check runs unless something stops it first.
    let real = sign(&claims("x", &[]), &gateway.signer);
    let header = real.split('.').next().unwrap();
    let rest = token.split_once('.').unwrap().1;
    format!("{header}.{rest}")
}

async fn status(client: &reqwest::Client, gateway: &TestGateway, path: &str, token: &str) -> u16 {
    client
        .get(gateway.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_refused_with_429_until_the_failure_rate_allows_again() {
    let clock = Arc::new(ManualClock::starting_at(1_000_000_000));
    let gateway = gateway(&clock).await;
    let attacker = &gateway.http;
    let forged = forged(&gateway);
    for _ in 0..3 {
        assert_eq!(status(attacker, &gateway, PROTECTED, &forged).await, 401);
    }

    let refused = attacker
        .get(gateway.url(PROTECTED))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    expect_problem_of(refused, 429, "too-many-failed-authentications").await;
    let valid = gateway.token("user-1", &["customer"]);
    assert_eq!(
        status(attacker, &gateway, PROTECTED, &valid).await,
        429,
        "the address is refused whatever it sends"
    );
    let metrics = gateway.metrics().await;
    assert!(metrics.contains("gateway_preauth_refused_total 2"), "{metrics}");

    clock.advance(Duration::from_secs(1));
    assert_eq!(status(attacker, &gateway, PROTECTED, &valid).await, 200);
    assert_eq!(gateway.echo.hits(), 1);
}

#[tokio::test]
async fn other_addresses_and_public_routes_stay_open_during_a_flood() {
    let clock = Arc::new(ManualClock::starting_at(1_000_000_000));
    let gateway = gateway(&clock).await;
    let forged = forged(&gateway);
    for _ in 0..10 {
        status(&gateway.http, &gateway, PROTECTED, &forged).await;
    }

    let neighbour = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let valid = gateway.token("user-2", &["customer"]);
    assert_eq!(status(&neighbour, &gateway, PROTECTED, &valid).await, 200);
    // On a public route the flooding address is served as if it had sent no token.
    assert_eq!(
        status(&gateway.http, &gateway, "/api/echo/items", &forged).await,
        200
    );
}

#[tokio::test]
async fn a_valid_token_never_counts_as_a_failure() {
    let clock = Arc::new(ManualClock::starting_at(1_000_000_000));
    let gateway = gateway(&clock).await;
    let valid = gateway.token("user-3", &["customer"]);

    for _ in 0..20 {
        assert_eq!(status(&gateway.http, &gateway, PROTECTED, &valid).await, 200);
    }
}

#[tokio::test]
async fn a_token_of_an_impossible_shape_is_refused_unread_and_counted() {
    let clock = Arc::new(ManualClock::starting_at(1_000_000_000));
    let gateway = gateway(&clock).await;

    for token in ["abc", "a.b.c", &format!("a.b.{}", "A".repeat(90))] {
        let response = gateway.get_as(PROTECTED, token).await;
        expect_problem_of(response, 401, "unauthorized").await;
    }

    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("gateway_tokens_screened_out_total 3"),
        "{metrics}"
    );
    assert_eq!(status(&gateway.http, &gateway, PROTECTED, "abc").await, 429);
}
