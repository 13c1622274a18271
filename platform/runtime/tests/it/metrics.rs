use crate::support::{TestApp, spawn_app};

async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "content type {content_type}",
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_requests_by_method_route_and_status_in_openmetrics_text() {
    let app = spawn_app().await;
    for _ in 0..2 {
        assert_eq!(app.get("/echo").send().await.unwrap().status(), 200);
    }

    let text = scrape(&app).await;
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/echo",status_code="200"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/echo"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_request_duration_seconds_count{method="GET",route="/echo"} 2"#),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

#[tokio::test]
async fn metrics_label_a_route_by_its_template_not_the_requested_path() {
    let app = spawn_app().await;
    assert_eq!(app.get("/items/42").send().await.unwrap().status(), 200);
    assert_eq!(app.get("/items/43").send().await.unwrap().status(), 200);

    let text = scrape(&app).await;
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/items/{id}",status_code="200"} 2"#),
        "{text}"
    );
    assert!(!text.contains("/items/42"), "{text}");
}

#[tokio::test]
async fn metrics_count_every_unknown_path_under_one_unmatched_label() {
    let app = spawn_app().await;
    for path in ["/nothing/here", "/nor/here"] {
        assert_eq!(app.get(path).send().await.unwrap().status(), 404);
    }

    let text = scrape(&app).await;
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="unmatched",status_code="404"} 2"#),
        "{text}"
    );
    assert!(!text.contains("/nothing/here"), "{text}");
}

#[tokio::test]
async fn metrics_count_failed_requests_with_their_status() {
    let app = spawn_app().await;
    assert_eq!(app.get("/panic").send().await.unwrap().status(), 500);

    let text = scrape(&app).await;
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/panic",status_code="500"} 1"#),
        "{text}"
    );
}
