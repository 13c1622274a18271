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

/// An upstream that answers each request head with the raw bytes `script` gives for its path,
/// and closes the connection when the script says so; it counts the connections it accepted.
async fn scripted(script: fn(&str) -> (&'static [u8], bool)) -> (String, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    // The gateway's requests here have no body: a head ends each one.
                    while let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&read[..end]).into_owned();
                        read.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                        let (answer, close) = script(&path);
                        if stream.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn answers_framed_every_way_arrive_whole_on_connections_kept_where_they_can_be() {
    let (url, accepted) = scripted(|path| match path {
        "/api/echo/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n",
            false,
        ),
        "/api/echo/continue" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated",
            false,
        ),
        "/api/echo/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
        "/api/echo/until-close" => (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", true),
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false),
    })
    .await;
    let gateway = spawn_gateway_over(vec![url], |_| {}).await;

    let chunked = gateway.get("/api/echo/chunked").send().await.unwrap();
    assert_eq!(chunked.status(), 200);
    assert_eq!(chunked.text().await.unwrap(), "hello world");
    let created = gateway.get("/api/echo/continue").send().await.unwrap();
    assert_eq!(created.status(), 201, "the interim answer is passed over");
    assert_eq!(created.text().await.unwrap(), "created");
    let head = gateway
        .http
        .head(gateway.url("/api/echo/head"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "5");
    assert_eq!(*accepted.lock().unwrap(), 1, "three answers on one connection");

    let until_close = gateway.get("/api/echo/until-close").send().await.unwrap();
    assert_eq!(until_close.status(), 200);
    assert_eq!(until_close.text().await.unwrap(), "until the end");
    let after = gateway.get("/api/echo/chunked").send().await.unwrap();
    assert_eq!(after.text().await.unwrap(), "hello world");
    assert_eq!(
        *accepted.lock().unwrap(),
        2,
        "a body that ended with its connection needs a new one"
    );
}

#[tokio::test]
async fn an_answer_that_could_smuggle_another_is_a_502_and_its_connection_is_dropped() {
    let (url, accepted) = scripted(|path| match path {
        // Read by its length, the body is a second answer; read as chunked, it is empty.
        "/api/echo/smuggle" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 45\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        "/api/echo/bad-chunk" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    })
    .await;
    let gateway = spawn_gateway_over(vec![url], |_| {}).await;

    let refused = gateway.post("/api/echo/smuggle").send().await.unwrap();
    assert_eq!(refused.status(), 502);
    let ok = gateway.get("/api/echo/fine").send().await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "ok");
    assert_eq!(
        *accepted.lock().unwrap(),
        2,
        "the refused answer's connection was not reused"
    );

    // A body whose framing breaks after the head: the answer has started (its head may be on
    // the way to the client already), so the client's connection breaks off.
    let broken = match gateway.post("/api/echo/bad-chunk").send().await {
        Ok(response) => response.bytes().await.err(),
        Err(error) => Some(error),
    };
    assert!(broken.is_some(), "the client sees the answer fail");
    let ok = gateway.get("/api/echo/fine").send().await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "ok");
    assert_eq!(*accepted.lock().unwrap(), 3);
}

#[tokio::test]
async fn an_upstream_that_refuses_a_body_before_reading_it_is_answered_with_its_refusal() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Reads only the head, answers 413 and closes with the body unread.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut buf = [0u8; 4096];
                while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
                    .await;
            });
        }
    });
    let gateway = spawn_gateway_over(vec![url], |config| {
        config.http.body_limit_bytes = 64 * 1024 * 1024;
    })
    .await;

    let body = vec![b'x'; 32 * 1024 * 1024];
    let response = gateway.post("/api/echo/orders").body(body).send().await.unwrap();
    assert_eq!(response.status(), 413, "the upstream's own answer, not a 502");
    assert_eq!(response.text().await.unwrap(), "too big!");
}
