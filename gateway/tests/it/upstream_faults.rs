use axum::body::{Body, Bytes};
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::{
    PATIENCE, TestGateway, closed_url, echoed, expect_problem_of, pattern, spawn_gateway_with,
};

/// POSTs `frames` to `/api/echo/uploads` as a body of unknown length (sent chunked).
async fn post_streamed(
    gateway: &TestGateway,
    frames: impl IntoIterator<Item = std::io::Result<Bytes>, IntoIter: Send + 'static>,
) -> http::Response<hyper::body::Incoming> {
    let request = http::Request::post(gateway.url("/api/echo/uploads"))
        .body(Body::from_stream(futures_util::stream::iter(frames)))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("the gateway answers")
        .expect("the gateway answers over HTTP")
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_prompt_502() {
    let gateway = spawn_gateway_with(|config| {
        config.upstreams.insert("echo".into(), vec![closed_url()]);
    })
    .await;

    let response = gateway.get("/api/echo/items").send().await.unwrap();

    // A 502, not the 504 of a timeout: the refused connection is the answer, nothing waited.
    assert_eq!(response.headers()["retry-after"], "1");
    let body = expect_problem_of(response, 502, "bad-gateway").await;
    assert!(
        !body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "internal addresses stay internal: {body}"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_after_the_upstream_timeout() {
    let gateway = spawn_gateway_with(|config| config.gateway.upstream_timeout_ms = 300).await;

    // Without the timeout the request would hang past the test client's patience.
    gateway.expect_upstream_timeout("/api/echo/never", 300).await;
}

#[tokio::test]
async fn a_body_declared_larger_than_the_limit_is_refused_with_413_before_the_upstream() {
    let gateway = spawn_gateway_with(|config| config.http.body_limit_bytes = 64 * 1024).await;

    let response = gateway
        .post("/api/echo/uploads")
        .body(vec![b'x'; 64 * 1024 + 1])
        .send()
        .await
        .unwrap();

    expect_problem_of(response, 413, "payload-too-large").await;
    assert_eq!(gateway.echo.hits(), 0);
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_forwarded() {
    let gateway = spawn_gateway_with(|config| config.http.body_limit_bytes = 64 * 1024).await;

    let response = gateway
        .post("/api/echo/uploads")
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();

    assert_eq!(echoed(response).await["body_len"], 64 * 1024);
}

#[tokio::test]
async fn a_chunked_body_that_outgrows_the_limit_is_refused_with_413() {
    let gateway = spawn_gateway_with(|config| config.http.body_limit_bytes = 64 * 1024).await;
    // Without a content length only counting the streamed bytes can catch it.
    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 16 * 1024])));
    let response = post_streamed(&gateway, chunks).await;

    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], "urn:mercato:problem:payload-too-large", "{body}");
}

#[tokio::test]
async fn a_large_streamed_response_arrives_intact() {
    let gateway = spawn_gateway_with(|_| {}).await;
    let size = 5 * 1024 * 1024;

    let response = gateway
        .get(&format!("/api/echo/download?bytes={size}"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), size);
    assert!(
        body.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "the body arrived altered"
    );
}

#[tokio::test]
async fn a_large_request_body_reaches_the_upstream_whole() {
    let gateway = spawn_gateway_with(|_| {}).await;
    let size = 512 * 1024;
    let body: Vec<u8> = (0..size).map(pattern).collect();

    let response = gateway
        .post("/api/echo/uploads")
        .body(body.clone())
        .send()
        .await
        .unwrap();

    let seen = echoed(response).await;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_len"], size);
    assert_eq!(seen["body_matches_pattern"], true, "every byte in order");

    // Without a length, in frames small and large: chunked upstream, byte for byte.
    let mut frames = Vec::new();
    let mut at = 0;
    for len in [7, 200 * 1024, 1, 64 * 1024, 3, 100_000].into_iter().cycle() {
        let end = (at + len).min(size);
        frames.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(&body[at..end])));
        at = end;
        if at == size {
            break;
        }
    }
    let response = post_streamed(&gateway, frames).await;
    assert_eq!(response.status(), 200);
    let seen: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(seen["body_len"], size);
    assert_eq!(seen["headers"]["transfer-encoding"][0], "chunked");
    assert_eq!(seen["body_matches_pattern"], true, "every byte in order");
}
