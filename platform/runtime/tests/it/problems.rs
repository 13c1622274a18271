use std::time::{Duration, Instant};

use mercato_runtime::HttpConfig;
use mercato_testkit::service::send_body;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{NewOrder, Options, expect_problem, spawn_app, spawn_app_with};

fn small_body_limit() -> Options {
    Options {
        config: HttpConfig {
            body_limit_bytes: 64,
            ..HttpConfig::default()
        },
        ..Options::default()
    }
}

/// Requests no route takes, each a test: the problem they are answered with.
macro_rules! unrouted {
    ($($name:ident: $method:ident $path:literal => $status:literal $slug:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let app = spawn_app().await;
            let request = app.http.request(reqwest::Method::$method, app.url($path));
            expect_problem(request.send().await.unwrap(), $status, $slug).await;
        }
    )*};
}

unrouted! {
    an_unknown_path_is_a_404_problem: GET "/no/such/thing" => 404 "not-found";
    a_method_the_route_does_not_support_is_a_405_problem: DELETE "/echo" => 405 "method-not-allowed";
    an_operations_route_called_with_the_wrong_method_is_a_405_problem:
        POST "/health" => 405 "method-not-allowed";
}

#[tokio::test]
async fn a_well_formed_json_body_reaches_the_handler() {
    let app = spawn_app().await;
    let order = NewOrder {
        sku: "SKU-1".into(),
        quantity: 3,
    };
    let response = app.post("/orders").json(&order).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, json!({"sku": "SKU-1", "quantity": 3}));
}

/// JSON bodies the handler's type refuses, each a test: a `422` problem whose first error names
/// the field (by its path when nested) and says what is wrong with it.
macro_rules! refused_naming {
    ($($name:ident: $path:literal, $body:tt => $field:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let app = spawn_app().await;
            let response = app.post($path).json(&json!($body)).send().await.unwrap();
            let problem = expect_problem(response, 422, "validation-error").await;
            assert_eq!(problem["errors"][0]["field"], $field, "{problem}");
            assert!(problem["errors"][0]["message"].is_string(), "{problem}");
        }
    )*};
}

refused_naming! {
    json_missing_a_required_field_is_a_422_problem_naming_the_field:
        "/orders", {"sku": "SKU-1"} => "quantity";
    json_with_a_field_of_the_wrong_type_is_a_422_problem_naming_the_field:
        "/orders", {"sku": "SKU-1", "quantity": "three"} => "quantity";
    json_with_a_nested_field_of_the_wrong_type_is_a_422_problem_naming_its_path:
        "/carts", {"lines": [{"sku": "SKU-1", "quantity": 1}, {"sku": "SKU-2", "quantity": "two"}]}
        => "lines[1].quantity";
    json_missing_a_nested_field_is_a_422_problem_naming_its_path:
        "/carts", {"lines": [{"sku": "SKU-1", "quantity": 1}, {"sku": "SKU-2"}]} => "lines[1].quantity";
}

/// Bodies the handler cannot read as JSON, each a test: the problem, with a detail saying why.
macro_rules! unreadable {
    ($($name:ident: $content_type:literal, $body:literal => $status:literal $slug:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let app = spawn_app().await;
            let response = send_body(app.post("/orders"), $content_type, $body).await;
            let problem = expect_problem(response, $status, $slug).await;
            assert!(problem["detail"].is_string(), "{problem}");
        }
    )*};
}

unreadable! {
    malformed_json_is_a_400_problem:
        "application/json", r#"{"sku": "SKU-1", "quantity":"# => 400 "bad-request";
    a_body_that_is_not_declared_as_json_is_a_415_problem:
        "text/plain", r#"{"sku": "SKU-1", "quantity": 3}"# => 415 "unsupported-media-type";
}

#[tokio::test]
async fn a_body_declared_larger_than_the_limit_is_a_413_problem() {
    let app = spawn_app_with(small_body_limit()).await;
    let order = NewOrder {
        sku: "S".repeat(200),
        quantity: 1,
    };
    let response = app.post("/orders").json(&order).send().await.unwrap();
    let problem = expect_problem(response, 413, "payload-too-large").await;
    assert_eq!(problem["detail"], "the request body must not exceed 64 bytes");
}

/// `{"sku":"SSS…","quantity":1}` of exactly `len` bytes.
fn order_json_of_len(len: usize) -> String {
    let body = format!(r#"{{"sku":"{}","quantity":1}}"#, "S".repeat(len - 23));
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted() {
    let app = spawn_app_with(small_body_limit()).await;
    let response = send_body(app.post("/orders"), "application/json", order_json_of_len(64)).await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn a_body_one_byte_over_the_limit_is_a_413_problem() {
    let app = spawn_app_with(small_body_limit()).await;
    let response = send_body(app.post("/orders"), "application/json", order_json_of_len(65)).await;
    expect_problem(response, 413, "payload-too-large").await;
}

/// A chunked body declares no length, so only reading it can find it too large.
#[tokio::test]
async fn a_chunked_body_larger_than_the_limit_is_a_413_problem() {
    let app = spawn_app_with(small_body_limit()).await;
    let body = format!(r#"{{"sku": "{}", "quantity": 1}}"#, "S".repeat(200));
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        app.addr,
        body.len(),
    );
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 413 "), "{raw}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("content-type: application/problem+json")),
        "{raw}"
    );
    let problem: serde_json::Value = serde_json::from_str(body).expect("a JSON problem body");
    assert_eq!(problem["status"], 413, "{problem}");
    assert_eq!(
        problem["type"], "urn:mercato:problem:payload-too-large",
        "{problem}"
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let response = app.get("/panic").send().await.unwrap();
    let problem = expect_problem(response, 500, "internal").await;
    assert!(
        !problem.to_string().contains("on purpose"),
        "the panic message never reaches the client: {problem}"
    );

    for path in ["/echo", "/health"] {
        assert_eq!(
            app.get(path).send().await.unwrap().status(),
            200,
            "{path} after a panic"
        );
    }
}

#[tokio::test]
async fn a_handler_slower_than_the_request_timeout_is_a_503_problem() {
    let options = Options {
        config: HttpConfig {
            request_timeout_ms: 200,
            ..HttpConfig::default()
        },
        ..Options::default()
    };
    let app = spawn_app_with(options).await;

    let start = Instant::now();
    let response = app.get("/never").send().await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.headers()["retry-after"], "1");
    expect_problem(response, 503, "unavailable").await;
}
