//! The gateway's own upstream connections: kept and reused while the upstream keeps them, new
//! ones when it closes them, and never reused after an answer left unread.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Uri, header};

use crate::support::spawn_gateway_over;

/// Bytes in the answer to `.../large`: more than loopback buffers hold, so that a client that
/// stops reading leaves most of it unsent.
const LARGE: usize = 64 * 1024 * 1024;

/// An upstream that records the client port of every request (one port a connection) and
/// answers `ok` (or [`LARGE`] bytes to a path ending in `/large`), closing the connection after
/// each answer when `close` is set.
async fn recording(close: bool) -> (String, Arc<Mutex<Vec<u16>>>) {
    let ports = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ports);
    let answer = move |ConnectInfo(peer): ConnectInfo<SocketAddr>, uri: Uri| {
        seen.lock().unwrap().push(peer.port());
        async move {
            if uri.path().ends_with("/large") {
                let chunks = futures_util::stream::iter(
                    std::iter::repeat_n(Bytes::from_static(&[b'x'; 64 * 1024]), LARGE / (64 * 1024))
                        .map(Ok::<_, std::io::Error>),
                );
                let mut response = Body::from_stream(chunks).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, LARGE.into());
                response
            } else if close {
                ([(header::CONNECTION, "close")], "ok").into_response()
            } else {
                "ok".into_response()
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(answer);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    });
    (url, ports)
}

fn connections(ports: &Mutex<Vec<u16>>) -> (usize, usize) {
    let ports = ports.lock().unwrap();
    (ports.len(), ports.iter().collect::<BTreeSet<_>>().len())
}

#[tokio::test]
async fn requests_one_after_another_share_one_upstream_connection() {
    let (url, ports) = recording(false).await;
    let gateway = spawn_gateway_over(vec![url], |_| {}).await;

    for _ in 0..10 {
        let response = gateway.get("/api/echo/items").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    // A POST with a body too.
    let response = gateway.post("/api/echo/orders").body("{}").send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "ok");

    assert_eq!(
        connections(&ports),
        (11, 1),
        "one connection carried every request"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_not_reused() {
    let (url, ports) = recording(true).await;
    let gateway = spawn_gateway_over(vec![url], |_| {}).await;

    for _ in 0..5 {
        let response = gateway.post("/api/echo/orders").body("{}").send().await.unwrap();
        assert_eq!(response.status(), 200, "never a closed connection's error");
        assert_eq!(response.text().await.unwrap(), "ok");
    }

    assert_eq!(connections(&ports), (5, 5), "a new connection each time");
}

#[tokio::test]
async fn a_connection_whose_answer_was_left_unread_is_not_reused() {
    let (url, ports) = recording(false).await;
    let gateway = spawn_gateway_over(vec![url], |_| {}).await;

    let mut large = gateway.get("/api/echo/large").send().await.unwrap();
    assert_eq!(large.status(), 200);
    assert!(large.chunk().await.unwrap().is_some(), "the answer started");
    drop(large);

    // Its unread bytes must not be taken for the next answer.
    let response = gateway.get("/api/echo/items").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    let ports = ports.lock().unwrap().clone();
    assert_eq!(ports.len(), 2);
    assert_ne!(ports[0], ports[1], "a new connection for the second request");
}
