//! Rate limits through the real gateway, on a manual clock so that no test depends on wall time.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use mercato_gateway::{Config, ManualClock, RateClassConfig, RouteAuth, RouteConfig};

use crate::support::{TestGateway, client_from, echoed, expect_problem_of, spawn_gateway_with_clock};

const START_US: u64 = 1_700_000_000_000_000;

fn class(rate_per_second: u32, burst: u32) -> RateClassConfig {
    RateClassConfig {
        rate_per_second,
        burst,
    }
}

/// Sets the `default` class and a stricter `auth` class used by `/api/login`.
fn limits(config: &mut Config, default: RateClassConfig, auth: RateClassConfig) {
    config.gateway.rate_limit.classes = BTreeMap::from([("default".into(), default), ("auth".into(), auth)]);
    config
        .gateway
        .routes
        .push(RouteConfig::new("/api/login", "echo", RouteAuth::Public).with_rate_class("auth"));
}

async fn limited_gateway(clock: &Arc<ManualClock>, default: RateClassConfig) -> TestGateway {
    spawn_gateway_with_clock(clock.clone(), |config| limits(config, default, class(1, 1))).await
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} is missing from a {} answer", response.status()))
        .to_str()
        .unwrap()
}

/// Checks a `429` answer: problem type, `Retry-After` in seconds and the `RateLimit-*` headers.
async fn expect_limited(response: reqwest::Response, retry_after: &str, limit: &str) {
    assert_eq!(header(&response, "retry-after"), retry_after);
    assert_eq!(header(&response, "ratelimit-limit"), limit);
    assert_eq!(header(&response, "ratelimit-remaining"), "0");
    assert!(header(&response, "ratelimit-reset").parse::<u64>().unwrap() >= 1);
    let body = expect_problem_of(response, 429, "rate-limited").await;
    assert!(body["detail"].as_str().unwrap().contains("retry"), "{body}");
}

#[tokio::test]
async fn a_burst_passes_with_ratelimit_headers_then_the_next_call_gets_429_with_retry_after() {
    let clock = Arc::new(ManualClock::starting_at(START_US));
    let gateway = limited_gateway(&clock, class(1, 3)).await;

    for (remaining, reset) in [("2", "1"), ("1", "2"), ("0", "3")] {
        let response = gateway.get("/api/echo/items").send().await.unwrap();
        assert_eq!(header(&response, "ratelimit-limit"), "3");
        assert_eq!(header(&response, "ratelimit-remaining"), remaining);
        assert_eq!(header(&response, "ratelimit-reset"), reset);
        echoed(response).await;
    }
    let refused = gateway.get("/api/echo/items").send().await.unwrap();

    expect_limited(refused, "1", "3").await;
    assert_eq!(
        gateway.echo.hits(),
        3,
        "a limited call never reaches the upstream"
    );
}

#[tokio::test]
async fn the_sustained_rate_is_enforced_once_the_burst_is_spent() {
    let clock = Arc::new(ManualClock::starting_at(START_US));
    let gateway = limited_gateway(&clock, class(10, 2)).await;
    for _ in 0..2 {
        echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;
    }

    for _ in 0..10 {
        expect_limited(gateway.get("/api/echo/items").send().await.unwrap(), "1", "2").await;
        clock.advance(Duration::from_millis(100));
        echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;
    }
    expect_limited(gateway.get("/api/echo/items").send().await.unwrap(), "1", "2").await;

    assert_eq!(
        gateway.echo.hits(),
        12,
        "2 of burst and one per 100 ms for a second"
    );
}

#[tokio::test]
async fn after_retry_after_has_passed_the_caller_is_admitted_again() {
    let clock = Arc::new(ManualClock::starting_at(START_US));
    let gateway = limited_gateway(&clock, class(1, 1)).await;
    echoed(gateway.get("/api/echo/a").send().await.unwrap()).await;
    let refused = gateway.get("/api/echo/a").send().await.unwrap();
    let wait: u64 = header(&refused, "retry-after").parse().unwrap();

    clock.advance(Duration::from_secs(wait));

    echoed(gateway.get("/api/echo/a").send().await.unwrap()).await;
}

#[tokio::test]
async fn each_token_subject_has_its_own_limit() {
    let clock = Arc::new(ManualClock::starting_at(START_US));
    let gateway = limited_gateway(&clock, class(1, 1)).await;
    let ada = gateway.token("ada", &["customer"]);
    let bob = gateway.token("bob", &["customer"]);

    echoed(gateway.get_as("/api/private/x", &ada).await).await;
    let ada_again = gateway.get_as("/api/private/x", &ada).await;
    let bob_first = gateway.get_as("/api/private/x", &bob).await;
    // A token offered on a public route counts against its subject, not the client's address.
    let bob_public = gateway.get_as("/api/echo/x", &bob).await;
    let anonymous = gateway.get("/api/echo/x").send().await.unwrap();

    expect_limited(ada_again, "1", "1").await;
    echoed(bob_first).await;
    expect_limited(bob_public, "1", "1").await;
    echoed(anonymous).await;
}

#[tokio::test]
async fn anonymous_callers_are_limited_per_client_address() {
    let clock = Arc::new(ManualClock::starting_at(START_US));
    let gateway = limited_gateway(&clock, class(1, 2)).await;
    let first = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let second = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let url = gateway.url("/api/echo/items");

    for _ in 0..2 {
        echoed(first.get(&url).send().await.unwrap()).await;
    }
    let first_refused = first.get(&url).send().await.unwrap();
    let second_admitted = second.get(&url).send().await.unwrap();

    expect_limited(first_refused, "1", "2").await;
    assert_eq!(header(&second_admitted, "ratelimit-remaining"), "1");
    echoed(second_admitted).await;
}

#[tokio::test]
async fn the_auth_class_is_limited_apart_from_and_stricter_than_the_default() {
    let clock = Arc::new(ManualClock::starting_at(START_US));
    let gateway = spawn_gateway_with_clock(clock.clone(), |config| {
        limits(config, class(100, 100), class(1, 2));
    })
    .await;

    for _ in 0..2 {
        echoed(gateway.post("/api/login").send().await.unwrap()).await;
    }
    let refused = gateway.post("/api/login").send().await.unwrap();
    let elsewhere = gateway.get("/api/echo/items").send().await.unwrap();

    expect_limited(refused, "1", "2").await;
    assert_eq!(header(&elsewhere, "ratelimit-limit"), "100");
    assert_eq!(header(&elsewhere, "ratelimit-remaining"), "99");
    echoed(elsewhere).await;
}

#[tokio::test]
async fn refused_tokens_are_rate_limited_by_address_too() {
    let clock = Arc::new(ManualClock::starting_at(START_US));
    let gateway = limited_gateway(&clock, class(1, 2)).await;

    for _ in 0..2 {
        let response = gateway.get_as("/api/private/x", "a.b.c").await;
        expect_problem_of(response, 401, "unauthorized").await;
    }
    let guessing = gateway.get_as("/api/private/x", "a.b.c").await;

    expect_limited(guessing, "1", "2").await;
}

#[tokio::test]
async fn a_disabled_limiter_adds_no_headers() {
    let gateway = spawn_gateway_with_clock(Arc::new(ManualClock::default()), |config| {
        config.gateway.rate_limit.enabled = false;
    })
    .await;

    let response = gateway.get("/api/echo/items").send().await.unwrap();

    assert!(response.headers().get("ratelimit-limit").is_none());
    echoed(response).await;
}

/// Needs Redis at `MERCATO_TEST_REDIS_URL` or 127.0.0.1:6379.
mod redis {
    use super::*;
    use crate::support::closed_url;
    use mercato_gateway::RateLimitBackend;
    use mercato_testkit::eventually;
    use mercato_testkit::redis::{KeyPrefix, RedisServer};

    use crate::support::PATIENCE;

    /// A gateway limiting through Redis at `url` under `prefix`, reading `clock`.
    async fn redis_gateway(
        clock: &Arc<ManualClock>,
        url: &str,
        prefix: &str,
        default: RateClassConfig,
    ) -> TestGateway {
        let (url, prefix) = (url.to_owned(), prefix.to_owned());
        spawn_gateway_with_clock(clock.clone(), move |config| {
            limits(config, default, class(1, 1));
            limit_through_redis(config, url, prefix, 1_000);
        })
        .await
    }

    /// Makes the gateway keep its limits in Redis at `url` under `prefix`.
    fn limit_through_redis(config: &mut Config, url: String, prefix: String, timeout_ms: u64) {
        let rate_limit = &mut config.gateway.rate_limit;
        rate_limit.backend = RateLimitBackend::Redis;
        rate_limit.redis_url = url;
        rate_limit.key_prefix = prefix;
        rate_limit.redis_timeout_ms = timeout_ms;
    }

    #[tokio::test]
    async fn two_gateways_sharing_redis_enforce_one_limit() {
        let clock = Arc::new(ManualClock::starting_at(START_US));
        let prefix = KeyPrefix::new();
        let a = redis_gateway(&clock, prefix.url(), prefix.as_str(), class(1, 4)).await;
        let b = redis_gateway(&clock, prefix.url(), prefix.as_str(), class(1, 4)).await;

        let mut remaining = Vec::new();
        for gateway in [&a, &b, &a, &b] {
            let response = gateway.get("/api/echo/items").send().await.unwrap();
            remaining.push(header(&response, "ratelimit-remaining").to_owned());
            echoed(response).await;
        }
        let a_refused = a.get("/api/echo/items").send().await.unwrap();
        let b_refused = b.get("/api/echo/items").send().await.unwrap();

        assert_eq!(
            remaining,
            ["3", "2", "1", "0"],
            "one budget across both instances"
        );
        expect_limited(a_refused, "1", "4").await;
        expect_limited(b_refused, "1", "4").await;

        clock.advance(Duration::from_secs(1));
        echoed(b.get("/api/echo/items").send().await.unwrap()).await;
        expect_limited(a.get("/api/echo/items").send().await.unwrap(), "1", "4").await;
        assert_eq!(a.echo.hits() + b.echo.hits(), 5);
    }

    /// The rate limiter's readiness check: its status and message.
    async fn limiter_check(gateway: &TestGateway) -> (String, String) {
        named_check(gateway, "rate_limiter").await
    }

    /// Readiness check `name`'s status and message; the gateway stays ready whatever they are.
    async fn named_check(gateway: &TestGateway, name: &str) -> (String, String) {
        let ready = gateway.readiness().await;
        assert_eq!(ready.status, 200, "a degraded limiter still serves");
        let check = ready.check(name);
        (
            check["status"].as_str().unwrap_or_default().to_owned(),
            check["error"].as_str().unwrap_or_default().to_owned(),
        )
    }

    #[tokio::test]
    async fn the_gateway_pings_its_redis_for_readiness_and_names_the_engine() {
        let mut redis = RedisServer::start().await;
        let clock = Arc::new(ManualClock::starting_at(START_US));
        let gateway = redis_gateway(&clock, &redis.url(), "ping", class(1, 2)).await;

        // Asked at once, before any request has used the limiter.
        let ready = gateway.readiness().await;
        let check = ready.check("redis");
        assert_eq!(check["status"], "up", "{check}");
        assert_eq!(check["engine"], "redis");
        assert!(check["latency_ms"].is_u64());

        redis.stop();
        let (status, message) = named_check(&gateway, "redis").await;
        assert_eq!(status, "degraded", "Redis down does not take the gateway out");
        assert!(!message.is_empty());
        redis.restart().await;
        eventually(PATIENCE, "the ping to reach Redis again", || async {
            (named_check(&gateway, "redis").await.0 == "up").then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn when_redis_stops_each_gateway_limits_locally_and_they_share_again_when_it_returns() {
        let mut redis = RedisServer::start().await;
        let clock = Arc::new(ManualClock::starting_at(START_US));
        let url = redis.url();
        let shared = |clock: Arc<ManualClock>, url: String| {
            spawn_gateway_with_clock(clock, move |config| {
                limits(config, class(1, 2), class(1, 1));
                limit_through_redis(config, url, "test".into(), 200);
                config.gateway.rate_limit.redis_retry_interval_ms = 50;
            })
        };
        let a = shared(clock.clone(), url.clone()).await;
        let b = shared(clock.clone(), url).await;
        echoed(a.get("/api/echo/items").send().await.unwrap()).await;
        echoed(b.get("/api/echo/items").send().await.unwrap()).await;
        expect_limited(a.get("/api/echo/items").send().await.unwrap(), "1", "2").await;

        redis.stop();
        // Each falls back to a limiter of its own, which has not seen the spent burst.
        for gateway in [&a, &b] {
            echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;
            let (status, message) = limiter_check(gateway).await;
            assert_eq!(status, "degraded");
            assert!(message.contains("local limits"), "{message}");
        }

        redis.restart().await;
        clock.advance(Duration::from_secs(10));
        for gateway in [&a, &b] {
            eventually(PATIENCE, "the limiter to use Redis again", || async {
                gateway.get("/api/echo/items").send().await.unwrap();
                (limiter_check(gateway).await.0 == "up").then_some(())
            })
            .await;
        }
        // Shared again: the restarted Redis holds one budget for both.
        clock.advance(Duration::from_secs(10));
        echoed(a.get("/api/echo/items").send().await.unwrap()).await;
        echoed(b.get("/api/echo/items").send().await.unwrap()).await;
        expect_limited(a.get("/api/echo/items").send().await.unwrap(), "1", "2").await;
        expect_limited(b.get("/api/echo/items").send().await.unwrap(), "1", "2").await;
    }

    #[tokio::test]
    async fn unreachable_redis_falls_back_to_local_limits_and_shows_in_readiness_and_metrics() {
        let clock = Arc::new(ManualClock::starting_at(START_US));
        let closed = closed_url().replace("http://", "redis://");
        let gateway = redis_gateway(&clock, &closed, "unused", class(1, 2)).await;

        for _ in 0..2 {
            echoed(gateway.get("/api/echo/items").send().await.unwrap()).await;
        }
        expect_limited(gateway.get("/api/echo/items").send().await.unwrap(), "1", "2").await;

        let (status, message) = limiter_check(&gateway).await;
        assert_eq!(status, "degraded");
        assert!(message.contains("local limits"), "{message}");
        let metrics = gateway.metrics().await;
        assert!(
            metrics.lines().any(|l| l == "gateway_rate_limiter_degraded 1"),
            "{metrics}"
        );
    }
}
