use std::io::ErrorKind;

use mercato_testkit::backend_tests;
use mercato_testkit::ready::Readiness;
use serde_json::json;

use crate::support::{PASSWORD, TestApp, expect_problem_of, spawn_app};

backend_tests!(spawn_app =>
    the_service_is_healthy_and_ready_with_its_database,
    metrics_count_the_requests_served,
    an_unknown_path_is_a_404_problem,
    stopping_the_service_closes_its_listener,
);

async fn the_service_is_healthy_and_ready_with_its_database(app: TestApp) {
    assert_eq!(app.get("/health").send().await.unwrap().status(), 200);
    let ready = Readiness::of(app.get("/ready").send().await.unwrap()).await;
    assert_eq!(ready.status, 200);
    let report = &ready.report;
    assert_eq!(report["status"], "ready", "{report}");
    let checks: Vec<(&str, &str)> = ready
        .checks()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(checks, [("database", "up"), ("bus", "up")], "{report}");
}

async fn metrics_count_the_requests_served(app: TestApp) {
    app.customer("ada@example.com").await;
    let again = app
        .register(&json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}))
        .await;
    expect_problem_of(again, 409, "conflict").await;
    let response = app.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for (route, status, count) in [
        ("/api/identity/register", 201, 1),
        ("/api/identity/register", 409, 1),
        ("/api/identity/token", 200, 1),
    ] {
        let sample =
            format!(r#"http_requests_total{{method="POST",route="{route}",status_code="{status}"}} {count}"#);
        assert!(text.lines().any(|l| l == sample), "no `{sample}` in\n{text}");
    }
}

async fn an_unknown_path_is_a_404_problem(app: TestApp) {
    let response = app.get("/api/identity/nothing").send().await.unwrap();
    expect_problem_of(response, 404, "not-found").await;
    let response = app.get("/api/identity/register").send().await.unwrap();
    expect_problem_of(response, 405, "method-not-allowed").await;
}

async fn stopping_the_service_closes_its_listener(mut app: TestApp) {
    app.customer("ada@example.com").await;
    app.stop().await.expect("a clean shutdown");
    let error = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect_err("the listener is closed");
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{error}");
}
