//! `GET /api/products` and `GET /api/products/{sku}`.

use mercato_testkit::ready::Readiness;
use mercato_testkit::{backend_tests, eventually};
use serde_json::Value;

use crate::support::{PATIENCE, TestApp, expect_problem, far_future, invalid_fields, order_id, spawn_app};

backend_tests!(spawn_app =>
    the_catalogue_lists_every_product_in_sku_order,
    pages_follow_each_other_until_the_last,
    bad_paging_parameters_are_named,
    a_product_is_read_by_its_sku_in_any_case,
    an_unknown_product_is_not_found,
    the_service_reports_ready_and_its_metrics,
    the_demo_catalogue_is_seeded_once,
);

fn skus(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("an items array")
        .iter()
        .map(|p| p["sku"].as_str().expect("a sku").to_owned())
        .collect()
}

async fn the_catalogue_lists_every_product_in_sku_order(app: TestApp) {
    let response = app.get("/api/products").await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    let listed = skus(&page);
    assert_eq!(listed.len(), 8, "{page}");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    assert!(page["next_page_token"].is_null(), "{page}");
    let mug = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sku"] == "MUG-001")
        .expect("the mug is listed");
    assert_eq!(mug["name"], "Enamel mug");
    assert!(mug["description"].is_string());
    assert_eq!(mug["price"]["amount_minor"], 1200);
    assert_eq!(mug["price"]["currency"], "EUR");
    assert_eq!(mug["available"], 100);
    let fields: Vec<&String> = mug.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["available", "description", "name", "price", "sku"]);
}

async fn pages_follow_each_other_until_the_last(app: TestApp) {
    let all: Value = app.get("/api/products?page_size=100").await.json().await.unwrap();
    let mut collected = Vec::new();
    let mut sizes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/api/products?page_size=3&page_token={t}"),
            None => "/api/products?page_size=3".to_owned(),
        };
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        let page: Value = response.json().await.unwrap();
        let skus = skus(&page);
        sizes.push(skus.len());
        collected.extend(skus);
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 2]);
    assert_eq!(collected, skus(&all));
}

async fn bad_paging_parameters_are_named(app: TestApp) {
    for size in ["0", "101", "ten", "-1", ""] {
        let problem = expect_problem(app.get(&format!("/api/products?page_size={size}")).await, 422).await;
        assert_eq!(invalid_fields(&problem), ["page_size"], "page_size={size}");
    }
    for token in ["garbage", "bm90LWEtdG9rZW4", "%00"] {
        let problem = expect_problem(app.get(&format!("/api/products?page_token={token}")).await, 422).await;
        assert_eq!(invalid_fields(&problem), ["page_token"], "page_token={token}");
    }
    let both = expect_problem(app.get("/api/products?page_size=0&page_token=x").await, 422).await;
    assert_eq!(invalid_fields(&both), ["page_size", "page_token"]);
}

async fn a_product_is_read_by_its_sku_in_any_case(app: TestApp) {
    let product = app.product("tee-blk-m").await;
    assert_eq!(product["sku"], "TEE-BLK-M");
    assert_eq!(product["price"]["amount_minor"], 2500);
    assert_eq!(product["available"], 80);
    assert_eq!(app.product("TEE-BLK-M").await, product);
}

async fn an_unknown_product_is_not_found(app: TestApp) {
    for sku in ["NOPE-1", "not%20a%20sku", "X".repeat(40).as_str()] {
        let problem = expect_problem(app.get(&format!("/api/products/{sku}")).await, 404).await;
        assert_eq!(problem["type"], "urn:mercato:problem:not-found");
    }
    expect_problem(app.get("/api/products/MUG-001/nothing-here").await, 404).await;
}

async fn the_service_reports_ready_and_its_metrics(app: TestApp) {
    let ready = Readiness::of(app.get("/ready").await).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.check_names(), ["database", "bus"]);

    let mut answers = app.answers().await;
    let order = order_id();
    app.reserve(&order, 1, &[("MUG-001", 1)], far_future()).await;
    answers.wait_for("StockReserved", |e| e.stream_id == order).await;
    eventually(PATIENCE, "the reservation to be counted", || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        let published = metrics.lines().find_map(|l| {
            l.strip_prefix("mercato_outbox_published_total ")?
                .parse::<u64>()
                .ok()
        });
        // StockReserved went out through the outbox: counted as published, nothing left behind.
        (metrics.contains(r#"mercato_inventory_reservations_total{outcome="reserved"} 1"#)
            && metrics.contains(
                r#"mercato_consumer_messages_total{subscriber="inventory-on-orders",outcome="applied"} 1"#,
            )
            && metrics.lines().any(|l| l == "mercato_outbox_backlog 0")
            && published.is_some_and(|n| n >= 1))
        .then_some(())
    })
    .await;
}

async fn the_demo_catalogue_is_seeded_once(app: TestApp) {
    app.set_stock("MUG-001", 3).await;
    let added = mercato_inventory::seed_demo_catalogue(&app.db).await.unwrap();
    assert_eq!(added, 0, "a catalogue with products is left alone");
    assert_eq!(app.stock("MUG-001").await, (3, 0));
    let page: Value = app.get("/api/products").await.json().await.unwrap();
    assert_eq!(skus(&page).len(), 8);
}
