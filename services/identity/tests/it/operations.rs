use std::io::ErrorKind;

use mercato_testkit::{TestBackend, backend_tests};
use serde_json::Value;

use crate::support::{expect_problem_of, spawn_app};

backend_tests!(
    the_service_is_healthy_and_ready_with_its_database,
    metrics_count_the_requests_served,
    an_unknown_path_is_a_404_problem,
    stopping_the_service_closes_its_listener,
);

async fn the_service_is_healthy_and_ready_with_its_database(backend: TestBackend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/health").send().await.unwrap().status(), 200);
    let response = app.get("/ready").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert!(report.to_string().contains("database"), "{report}");
}

async fn metrics_count_the_requests_served(backend: TestBackend) {
    let app = spawn_app(backend).await;
    app.customer("ada@example.com").await;
    let response = app.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("/api/identity/register"), "{text}");
    assert!(text.contains("/api/identity/token"), "{text}");
}

async fn an_unknown_path_is_a_404_problem(backend: TestBackend) {
    let app = spawn_app(backend).await;
    let response = app.get("/api/identity/nothing").send().await.unwrap();
    expect_problem_of(response, 404, "not-found").await;
    let response = app.get("/api/identity/register").send().await.unwrap();
    expect_problem_of(response, 405, "method-not-allowed").await;
}

async fn stopping_the_service_closes_its_listener(backend: TestBackend) {
    let mut app = spawn_app(backend).await;
    app.customer("ada@example.com").await;
    app.stop().await.expect("a clean shutdown");
    let error = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect_err("the listener is closed");
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{error}");
}
