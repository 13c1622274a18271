//! Admin changes kept and shared: a restarted gateway, or a second one, takes the same traffic
//! decisions (a file when embedded, Redis when distributed).

use mercato_gateway::{AdminStateBackend, Config};
use mercato_testkit::{eventually, joined};
use reqwest::Method;
use serde_json::{Value, json};

use crate::instances::Instance;
use crate::support::{PATIENCE, TestGateway, echoed, expect_problem_of, spawn_gateway_with};

fn urls(view: &Value, group: &str) -> Vec<String> {
    view[group]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["url"].as_str().unwrap().to_owned())
        .collect()
}

/// Asks `gateway`'s admin API to add `url` to echo's green group.
async fn add_green(gateway: &TestGateway, url: &str) -> reqwest::Response {
    gateway
        .admin_json(
            Method::POST,
            "/admin/upstreams/echo/instances",
            &json!({"url": url, "group": "green"}),
        )
        .await
}

/// Adds `url` to echo's green group and sends it all traffic, through `gateway`'s admin API.
async fn go_green(gateway: &TestGateway, url: &str) {
    let added = add_green(gateway, url).await;
    assert_eq!(added.status(), 201, "{}", added.text().await.unwrap());
    let switched = gateway
        .admin_json(
            Method::PUT,
            "/admin/upstreams/echo/traffic",
            &json!({"live": "green"}),
        )
        .await;
    assert_eq!(switched.status(), 200);
}

/// Adding `url` is refused with `503` and leaves the green group empty.
async fn expect_unstored_and_unmade(gateway: &TestGateway, url: &str) {
    let refused = add_green(gateway, url).await;

    expect_problem_of(refused, 503, "unavailable").await;
    assert!(urls(&gateway.upstream_view("echo").await, "green").is_empty());
}

async fn stop(gateway: TestGateway) {
    gateway.shutdown.cancel();
    joined("the gateway to stop", gateway.server).await.unwrap();
}

#[tokio::test]
async fn a_restarted_gateway_takes_the_decisions_kept_in_its_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("gateway-admin.json");
    let with_file = |config: &mut Config| {
        config.gateway.admin_state.backend = AdminStateBackend::File;
        config.gateway.admin_state.path = path.display().to_string();
    };
    let green = Instance::start("green").await;
    let first = spawn_gateway_with(with_file).await;
    go_green(&first, &green.url).await;
    let blue = urls(&first.upstream_view("echo").await, "blue");
    stop(first).await;

    let restarted = spawn_gateway_with(with_file).await;

    let view = restarted.upstream_view("echo").await;
    assert_eq!(view["green_percent"], 100, "{view}");
    assert_eq!(urls(&view, "green"), [green.url.as_str()]);
    assert_eq!(
        urls(&view, "blue"),
        blue,
        "the stored blue group, not the configured one"
    );
    let seen = echoed(restarted.get("/api/echo/items").send().await.unwrap()).await;
    assert_eq!(seen["upstream"], "green");
    assert_eq!(green.hits(), 1);
}

#[tokio::test]
async fn a_change_that_cannot_be_stored_is_refused_and_not_made() {
    let unreachable = crate::support::closed_url().replace("http://", "redis://");
    let gateway = spawn_gateway_with(move |config| {
        config.gateway.admin_state.backend = AdminStateBackend::Redis;
        config.gateway.admin_state.redis_url = unreachable;
        config.gateway.admin_state.redis_timeout_ms = 200;
    })
    .await;
    let green = Instance::start("green").await;

    expect_unstored_and_unmade(&gateway, &green.url).await;
}

#[tokio::test]
async fn a_change_whose_write_fails_is_undone_on_this_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway-admin.json");
    // The store reads (no file yet) but cannot write: its temporary file's name is a directory.
    std::fs::create_dir(dir.path().join("gateway-admin.json.partial")).unwrap();
    let gateway = spawn_gateway_with(|config| {
        config.gateway.admin_state.backend = AdminStateBackend::File;
        config.gateway.admin_state.path = path.display().to_string();
    })
    .await;
    let green = Instance::start("green").await;

    expect_unstored_and_unmade(&gateway, &green.url).await;
}

mod redis {
    use mercato_testkit::redis::KeyPrefix;

    use super::*;

    fn shared(prefix: &KeyPrefix) -> impl FnOnce(&mut Config) + use<> {
        let (url, prefix) = (prefix.url().to_owned(), prefix.as_str().to_owned());
        move |config| {
            let state = &mut config.gateway.admin_state;
            state.backend = AdminStateBackend::Redis;
            state.redis_url = url;
            state.key_prefix = prefix;
            state.sync_interval_ms = 50;
        }
    }

    #[tokio::test]
    async fn two_gateways_sharing_redis_take_the_same_decisions_and_a_new_one_starts_with_them() {
        let prefix = KeyPrefix::new();
        let a = spawn_gateway_with(shared(&prefix)).await;
        let b = spawn_gateway_with(shared(&prefix)).await;
        let green = Instance::start("green").await;

        go_green(&a, &green.url).await;

        eventually(PATIENCE, "b to send echo's traffic to green", || async {
            let view = b.upstream_view("echo").await;
            (view["green_percent"] == 100 && urls(&view, "green") == [green.url.clone()]).then_some(())
        })
        .await;
        let seen = echoed(b.get("/api/echo/items").send().await.unwrap()).await;
        assert_eq!(seen["upstream"], "green");

        // Back to blue through b: a follows.
        let back = b
            .admin_json(
                Method::PUT,
                "/admin/upstreams/echo/traffic",
                &json!({"green_percent": 0}),
            )
            .await;
        assert_eq!(back.status(), 200);
        eventually(PATIENCE, "a to send echo's traffic to blue", || async {
            (a.upstream_view("echo").await["green_percent"] == 0).then_some(())
        })
        .await;

        let c = spawn_gateway_with(shared(&prefix)).await;
        let view = c.upstream_view("echo").await;
        assert_eq!(view["green_percent"], 0, "{view}");
        assert_eq!(urls(&view, "green"), [green.url.as_str()]);
        assert_eq!(urls(&view, "blue"), urls(&a.upstream_view("echo").await, "blue"));
    }
}
