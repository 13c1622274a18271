//! Load balancing over several instances of an upstream: the balancer's choice, passive
//! ejection through each instance's breaker, active health checks, the bulkhead, and the admin
//! API that changes the instances at run time.

use std::sync::atomic::Ordering;

use mercato_gateway::{BalancingPolicy, Config, RouteAuth, RouteConfig};
use mercato_testkit::eventually;
use mercato_testkit::load::Load;
use reqwest::Method;
use serde_json::{Value, json};

use crate::instances::Instance;
use crate::support::{
    PATIENCE, TestGateway, breaker_name, expect_problem_of, small_breaker, spawn_gateway_over,
    spawn_gateway_with,
};

const INSTANCES: &str = "/admin/upstreams/echo/instances";

/// A gateway whose `echo` upstream is `instances`; `adjust` may change the rest.
async fn gateway_over(instances: &[&Instance], adjust: impl FnOnce(&mut Config)) -> TestGateway {
    let urls: Vec<String> = instances.iter().map(|i| i.url.clone()).collect();
    spawn_gateway_over(urls, move |config| {
        // The load loops send far more than a client's fair share.
        config.gateway.rate_limit.enabled = false;
        adjust(config);
    })
    .await
}

fn instance_view<'a>(view: &'a Value, url: &str) -> &'a Value {
    ["blue", "green"]
        .iter()
        .flat_map(|g| view[g]["instances"].as_array().unwrap())
        .find(|i| i["url"] == url)
        .unwrap_or_else(|| panic!("{url} in {view}"))
}

/// Waits until the instance at `url` in echo's admin view is `done`.
async fn until_instance(gateway: &TestGateway, url: &str, what: &str, done: impl Fn(&Value) -> bool) {
    eventually(PATIENCE, what, || async {
        let view = gateway.upstream_view("echo").await;
        done(instance_view(&view, url)).then_some(())
    })
    .await;
}

/// Waits until `count` grows by `more` (traffic is flowing there).
async fn grows(what: &str, more: usize, count: impl Fn() -> usize) {
    let start = count();
    eventually(PATIENCE, what, || {
        let now = count();
        async move { (now >= start + more).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn an_instance_killed_under_load_is_ejected_by_its_breaker_and_used_again_after_a_probe() {
    let (a, b, c) = (
        Instance::start("a").await,
        Instance::start("b").await,
        Instance::start("c").await,
    );
    let gateway = gateway_over(&[&a, &b, &c], |config| {
        // Round robin keeps sending B its share, so its own breaker sees the failures.
        config.gateway.load_balancing.policy = BalancingPolicy::RoundRobin;
        config.gateway.circuit_breaker = small_breaker(500);
    })
    .await;
    let load = Load::start(&gateway.http, &gateway.url("/api/echo/items"), 4);
    grows("traffic to reach b", 10, || b.hits()).await;

    b.kill().await;
    let breaker = breaker_name(&b.url);
    until_instance(&gateway, &b.url, "b's breaker to open", |i| {
        i["circuit"] != "closed"
    })
    .await;
    let b_hits = b.hits();
    grows("traffic to go on at a", 20, || a.hits()).await;
    grows("traffic to go on at c", 20, || c.hits()).await;
    assert_eq!(b.hits(), b_hits, "a dead instance gets nothing");

    b.restart();
    grows("b to be used again after a successful probe", 10, || b.hits()).await;
    let view = gateway.upstream_view("echo").await;
    assert_eq!(instance_view(&view, &b.url)["circuit"], "closed", "{view}");

    let (sent, failed) = load.finish().await;
    assert!(sent > 60, "{sent}");
    assert_eq!(
        failed, 0,
        "of {sent} GETs, {failed} failed: retries go to live instances"
    );
    assert!(gateway.breaker_transitions(&breaker, "open").await >= 1.0);
}

#[tokio::test]
async fn p2c_sends_most_traffic_to_the_faster_instance_and_moves_off_a_dead_one() {
    let (fast, slow) = (Instance::start("fast").await, Instance::start("slow").await);
    slow.delay(40);
    let gateway = gateway_over(&[&fast, &slow], |config| {
        config.gateway.load_balancing.policy = BalancingPolicy::P2c;
        config.gateway.load_balancing.latency_decay_ms = 300;
    })
    .await;
    gateway.expect_ok("/api/echo/items", 60).await;
    assert!(
        fast.hits() > 3 * slow.hits(),
        "fast {} vs slow {}",
        fast.hits(),
        slow.hits()
    );

    slow.delay(0);
    let load = Load::start(&gateway.http, &gateway.url("/api/echo/items"), 2);
    grows(
        "the estimate to decay and the recovered instance to be used",
        10,
        || slow.hits(),
    )
    .await;
    fast.kill().await;
    grows("traffic to move to the live instance", 30, || slow.hits()).await;
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "of {sent} GETs, {failed} failed");
}

/// Health checks every 50 ms, one failure enough to mark an instance unhealthy.
fn quick_health_checks(config: &mut Config) {
    let checks = &mut config.gateway.health_check;
    checks.enabled = true;
    checks.interval_ms = 50;
    checks.unhealthy_threshold = 1;
}

/// Makes `instance` fail its readiness checks and waits until the gateway marks it unhealthy.
async fn make_unhealthy(gateway: &TestGateway, instance: &Instance) {
    instance.behaviour.unready.store(true, Ordering::SeqCst);
    let what = format!("{} to be marked unhealthy", instance.url);
    until_instance(gateway, &instance.url, &what, |i| i["healthy"] == false).await;
}

#[tokio::test]
async fn an_instance_failing_its_health_checks_gets_no_traffic_until_it_passes_again() {
    let (a, b) = (Instance::start("a").await, Instance::start("b").await);
    let gateway = gateway_over(&[&a, &b], |config| {
        quick_health_checks(config);
        config.gateway.health_check.healthy_threshold = 2;
    })
    .await;
    make_unhealthy(&gateway, &b).await;
    let before = b.hits();
    gateway.expect_ok("/api/echo/items", 20).await;
    assert_eq!(b.hits(), before, "an unhealthy instance gets no traffic");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"gateway_upstream_instance_healthy{{upstream="echo",instance="{}"}} 0"#,
            b.url
        )),
        "{metrics}"
    );

    b.behaviour.unready.store(false, Ordering::SeqCst);
    eventually(PATIENCE, "b to pass its checks again and get traffic", || async {
        gateway.get("/api/echo/items").send().await.unwrap();
        (b.hits() > before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn when_every_instance_fails_its_checks_traffic_still_goes_to_them() {
    let a = Instance::start("a").await;
    let gateway = gateway_over(&[&a], quick_health_checks).await;
    make_unhealthy(&gateway, &a).await;
    assert_eq!(gateway.get("/api/echo/items").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_full_bulkhead_answers_503_at_once() {
    let slow = Instance::start("slow").await;
    slow.delay(2_000);
    let gateway = gateway_over(&[&slow], |config| {
        config.gateway.bulkhead.max_concurrent = 1;
        config.gateway.bulkhead.max_queued = 0;
    })
    .await;
    let first = tokio::spawn({
        let request = gateway.get("/api/echo/slow");
        async move { request.send().await.unwrap().status() }
    });
    until_instance(&gateway, &slow.url, "the first request to be in flight", |i| {
        i["in_flight"] == 1
    })
    .await;
    let response = gateway.get("/api/echo/other").send().await.unwrap();
    let body = expect_problem_of(response, 503, "unavailable").await;
    assert!(body["detail"].as_str().unwrap().contains("busy"), "{body}");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(slow.hits(), 1);
}

#[tokio::test]
async fn the_admin_api_adds_and_removes_instances_at_run_time() {
    let (a, b) = (Instance::start("a").await, Instance::start("b").await);
    let gateway = gateway_over(&[&a], |config| {
        config.gateway.load_balancing.policy = BalancingPolicy::RoundRobin;
    })
    .await;

    let added = gateway
        .admin_json(Method::POST, INSTANCES, &json!({ "url": b.url }))
        .await;
    assert_eq!(added.status(), 201);
    gateway.expect_ok("/api/echo/items", 10).await;
    assert_eq!((a.hits(), b.hits()), (5, 5), "round robin over both");

    let again = gateway
        .admin_json(Method::POST, INSTANCES, &json!({ "url": b.url }))
        .await;
    expect_problem_of(again, 409, "conflict").await;
    let bad = gateway
        .admin_json(Method::POST, INSTANCES, &json!({ "url": "ftp://nowhere" }))
        .await;
    expect_problem_of(bad, 400, "bad-request").await;
    let bad_group = gateway
        .admin_json(
            Method::POST,
            INSTANCES,
            &json!({ "url": b.url, "group": "purple" }),
        )
        .await;
    expect_problem_of(bad_group, 422, "validation-error").await;

    let removed = gateway
        .admin_call(Method::DELETE, &format!("{INSTANCES}?url={}", a.url))
        .await;
    assert_eq!(removed.status(), 204);
    gateway.expect_ok("/api/echo/items", 4).await;
    assert_eq!((a.hits(), b.hits()), (5, 9), "a removed instance gets nothing");
    let last = gateway
        .admin_call(Method::DELETE, &format!("{INSTANCES}?url={}", b.url))
        .await;
    expect_problem_of(last, 409, "conflict").await;
    let missing = gateway
        .admin_call(Method::DELETE, &format!("{INSTANCES}?url={}", a.url))
        .await;
    expect_problem_of(missing, 404, "not-found").await;
    let unknown = gateway.admin_call(Method::GET, "/admin/upstreams/nope").await;
    expect_problem_of(unknown, 404, "not-found").await;
}

#[tokio::test]
async fn the_admin_api_needs_an_admin_token() {
    let a = Instance::start("a").await;
    let gateway = gateway_over(&[&a], |_| {}).await;
    let anonymous = gateway.get("/admin/upstreams").send().await.unwrap();
    expect_problem_of(anonymous, 401, "unauthorized").await;
    let customer = gateway
        .http
        .post(gateway.url("/admin/upstreams/echo/instances"))
        .bearer_auth(gateway.token("c1", &["customer"]))
        .json(&json!({ "url": "http://127.0.0.1:1" }))
        .send()
        .await
        .unwrap();
    expect_problem_of(customer, 403, "forbidden").await;
    let listed = gateway.admin_call(Method::GET, "/admin/upstreams").await;
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert!(
        listed.as_array().unwrap().iter().any(|u| u["name"] == "echo"),
        "{listed}"
    );
}

#[tokio::test]
async fn an_upstream_may_be_declared_only_in_the_gateway_section() {
    let a = Instance::start("a").await;
    let url = a.url.clone();
    let gateway = spawn_gateway_with(move |config| {
        config.gateway.upstreams.insert(
            "extra".into(),
            mercato_gateway::UpstreamSettings {
                blue: vec![url],
                ..mercato_gateway::UpstreamSettings::default()
            },
        );
        config
            .gateway
            .routes
            .push(RouteConfig::new("/api/extra", "extra", RouteAuth::Public));
    })
    .await;
    assert_eq!(gateway.get("/api/extra/x").send().await.unwrap().status(), 200);
    assert_eq!(a.hits(), 1);
}
