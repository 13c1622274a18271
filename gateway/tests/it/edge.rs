//! Protocol abuse at the edge, over raw TCP: smuggling forms, slow heads and bodies, header
//! limits, and HTTP/2 rapid reset. Each test reads the connection until the gateway closes it
//! (or `PATIENCE` passes, which fails the test).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use mercato_testkit::{eventually, joined};

use crate::instances::Instance;
use crate::support::{PATIENCE, TestGateway, spawn_gateway, spawn_gateway_over, spawn_gateway_with};

/// What the gateway wrote on a connection after `request`, and whether it then closed it.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_closed(&mut stream).await
}

async fn read_until_closed(stream: &mut TcpStream) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0_u8; 16 * 1024];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&seen).into_owned(), closed)
}

fn responses(seen: &str) -> usize {
    seen.matches("HTTP/1.1 ").count()
}

async fn expect_refused(gateway: &TestGateway, request: &str, status: &str) {
    let (seen, closed) = exchange(gateway.addr, request.as_bytes()).await;
    assert!(
        seen.starts_with(&format!("HTTP/1.1 {status}")),
        "expected {status} for {request:?}, got {seen:?}"
    );
    assert!(closed, "the connection stayed open after {seen:?}");
    assert_eq!(responses(&seen), 1, "{seen:?}");
}

/// A front end that believed `Content-Length` would see one request with a 44-byte body; a
/// back end that believed the chunking would see a second request, to `/api/echo/smuggled`.
fn smuggling(first_header: &str, second_header: &str) -> String {
    let smuggled = "GET /api/echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    format!(
        "POST /api/echo/items HTTP/1.1\r\nHost: x\r\n{first_header}\r\n{second_header}\r\n\r\n0\r\n\r\n{smuggled}"
    )
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_with_400_in_either_order() {
    let gateway = spawn_gateway().await;
    let length = format!("Content-Length: {}", 5 + 44);
    for request in [
        smuggling(&length, "Transfer-Encoding: chunked"),
        smuggling("transfer-encoding: chunked", &length.to_uppercase()),
    ] {
        expect_refused(&gateway, &request, "400").await;
    }
    assert_eq!(gateway.echo.hits(), 0, "nothing went upstream");
}

#[tokio::test]
async fn a_conflicting_head_after_pipelined_requests_is_refused_after_their_answers() {
    let gateway = spawn_gateway().await;
    let request = format!(
        "POST /api/echo/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
         POST /api/echo/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         {}",
        smuggling("Content-Length: 49", "Transfer-Encoding: chunked")
    );

    let (seen, closed) = exchange(gateway.addr, request.as_bytes()).await;

    let statuses: Vec<&str> = seen
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &seen[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "400"], "{seen:?}");
    assert!(closed, "the connection stayed open");
    assert_eq!(gateway.echo.hits(), 2);
}

#[tokio::test]
async fn a_body_that_reads_like_a_conflicting_head_is_forwarded_as_body() {
    let gateway = spawn_gateway().await;
    let inner = smuggling("Content-Length: 49", "Transfer-Encoding: chunked");
    let request = format!(
        "POST /api/echo/a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inner}\
         POST /api/echo/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n\
         GET /api/echo/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        inner.len(),
        inner.len()
    );

    let (seen, closed) = exchange(gateway.addr, request.as_bytes()).await;

    assert_eq!(responses(&seen), 3, "{seen:?}");
    assert!(!seen.contains(" 400 "), "{seen:?}");
    assert_eq!(
        seen.matches(&format!("\"body_len\":{}", inner.len())).count(),
        2,
        "{seen:?}"
    );
    assert!(closed);
    assert_eq!(gateway.echo.hits(), 3);
}

/// Malformed request heads and bodies, each a test: refused with `400`, the connection closed,
/// nothing sent upstream.
macro_rules! refused_with_400 {
    ($($name:ident: $request:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let gateway = spawn_gateway().await;
            expect_refused(&gateway, $request, "400").await;
            assert_eq!(gateway.echo.hits(), 0);
        }
    )*};
}

refused_with_400! {
    obsolete_line_folding_is_refused_with_400_and_the_connection_closed:
        "GET /api/echo/items HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n";
    a_transfer_encoding_not_ending_in_chunked_is_refused_with_400:
        "POST /api/echo/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc";
    two_different_content_lengths_are_refused_with_400:
        "POST /api/echo/items HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
}

#[tokio::test]
async fn invalid_chunking_is_refused_with_400_and_the_connection_closed() {
    let gateway = spawn_gateway().await;
    let request = "POST /api/echo/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";

    expect_refused(&gateway, request, "400").await;
}

#[tokio::test]
async fn a_request_head_sent_too_slowly_is_cut_off() {
    let gateway = spawn_gateway_with(|c| c.gateway.edge.header_read_timeout_ms = 300).await;
    let (seen, closed) = exchange(gateway.addr, b"GET /api/echo/items HTTP/1.1\r\nHost: x\r\n").await;

    assert!(closed, "a head that never ends kept its connection");
    assert!(!seen.contains(" 200 "), "{seen:?}");
    assert_eq!(gateway.echo.hits(), 0);
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed_after_the_header_read_timeout() {
    let gateway = spawn_gateway_with(|c| c.gateway.edge.header_read_timeout_ms = 300).await;
    let (seen, closed) = exchange(gateway.addr, b"GET /api/echo/items HTTP/1.1\r\nHost: x\r\n\r\n").await;

    assert!(seen.starts_with("HTTP/1.1 200"), "{seen:?}");
    assert!(closed, "an idle connection was kept");
}

#[tokio::test]
async fn a_request_body_that_stalls_gets_408_and_the_connection_closed() {
    let gateway = spawn_gateway_with(|c| c.gateway.edge.body_idle_timeout_ms = 300).await;
    let (seen, closed) = exchange(
        gateway.addr,
        b"POST /api/echo/items HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;

    assert!(seen.starts_with("HTTP/1.1 408"), "{seen:?}");
    assert!(seen.contains("application/problem+json"), "{seen:?}");
    assert!(closed, "the connection stayed open");
}

/// A request with `count` header fields in all, the last `Connection: close`.
fn with_headers(count: usize) -> String {
    let mut request = String::from("GET /api/echo/items HTTP/1.1\r\nHost: x\r\n");
    for i in 2..count {
        request.push_str(&format!("X-Filler-{i}: 1\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    request
}

#[tokio::test]
async fn too_many_header_fields_get_431() {
    let gateway = spawn_gateway_with(|c| c.gateway.edge.max_headers = 20).await;

    expect_refused(&gateway, &with_headers(21), "431").await;
    assert_eq!(gateway.echo.hits(), 0);
}

#[tokio::test]
async fn the_default_header_count_limit_is_100() {
    let gateway = spawn_gateway().await;
    assert_eq!(mercato_gateway::EdgeConfig::default().max_headers, 100);

    expect_refused(&gateway, &with_headers(101), "431").await;
    assert_eq!(gateway.echo.hits(), 0);
    // Not 100: the gateway adds its own headers, and the test upstream has the same limit.
    let (seen, _) = exchange(gateway.addr, with_headers(90).as_bytes()).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen:?}");
    assert_eq!(gateway.echo.hits(), 1);
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let gateway = spawn_gateway_with(|c| c.gateway.edge.max_header_bytes = 16 * 1024).await;
    let request = format!(
        "GET /api/echo/items HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );

    expect_refused(&gateway, &request, "431").await;
    assert_eq!(gateway.echo.hits(), 0);
}

#[tokio::test]
async fn a_request_within_the_limits_still_passes_on_a_kept_alive_connection() {
    let gateway = spawn_gateway().await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let one = "GET /api/echo/items HTTP/1.1\r\nHost: x\r\n\r\n";
    let last = "GET /api/echo/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream
        .write_all(format!("{one}{one}{last}").as_bytes())
        .await
        .unwrap();

    let (seen, closed) = read_until_closed(&mut stream).await;

    assert_eq!(seen.matches("HTTP/1.1 200").count(), 3, "{seen:?}");
    assert!(closed);
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_then_stops_listening() {
    let slow = Instance::start("slow").await;
    slow.delay(300);
    let gateway = spawn_gateway_over(vec![slow.url.clone()], |_| {}).await;
    let in_flight = tokio::spawn(gateway.get("/api/echo/items").send());
    eventually(PATIENCE, "the request to reach the upstream", || async {
        (slow.hits() == 1).then_some(())
    })
    .await;

    gateway.shutdown.cancel();

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    joined("the gateway to stop", gateway.server).await.unwrap();
    assert!(TcpStream::connect(gateway.addr).await.is_err(), "still listening");
}

/// HTTP/2 frames by hand: a client that opens streams and resets them at once (CVE-2023-44487).
mod h2 {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: u8 = 4;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const GOAWAY: u8 = 7;
    const ENHANCE_YOUR_CALM: u32 = 11;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// `GET /api/echo/items` over http, HPACK: indexed `:method GET`, `:scheme http`, a literal
    /// `:path` (name index 4) and `:authority` (name index 1), without indexing.
    fn get_headers() -> Vec<u8> {
        let path = b"/api/echo/items";
        let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
        block.extend_from_slice(path);
        block.extend_from_slice(&[0x01, 0x01, b'x']);
        block
    }

    /// Every frame the gateway wrote until it closed the connection: (type, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while bytes.len() >= 9 {
            let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            if bytes.len() < 9 + len {
                break;
            }
            out.push((bytes[3], bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    async fn read_bytes_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
        let mut seen = Vec::new();
        let closed = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut seen))
            .await
            .is_ok();
        (seen, closed)
    }

    #[tokio::test]
    async fn rapid_reset_ends_the_connection_with_enhance_your_calm() {
        let gateway = spawn_gateway_with(|c| c.gateway.edge.h2_max_pending_accept_reset_streams = 5).await;
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        let mut flood = PREFACE.to_vec();
        flood.extend(frame(SETTINGS, 0, 0, &[]));
        let headers = get_headers();
        for i in 0..500_u32 {
            let id = 2 * i + 1;
            // END_STREAM | END_HEADERS, then CANCEL at once.
            flood.extend(frame(HEADERS, 0x5, id, &headers));
            flood.extend(frame(RST_STREAM, 0, id, &8_u32.to_be_bytes()));
        }
        // The gateway may close before it has read everything.
        let _ = stream.write_all(&flood).await;

        let (seen, closed) = read_bytes_until_closed(&mut stream).await;

        assert!(closed, "the connection stayed open");
        let goaway = frames(&seen)
            .into_iter()
            .find(|(kind, _)| *kind == GOAWAY)
            .expect("a GOAWAY frame");
        let code = u32::from_be_bytes(goaway.1[4..8].try_into().unwrap());
        assert_eq!(code, ENHANCE_YOUR_CALM);
        assert!(
            gateway.echo.hits() < 500,
            "every reset stream was still forwarded"
        );
    }

    #[tokio::test]
    async fn a_settings_flood_is_acknowledged_frame_by_frame_and_the_connection_still_serves() {
        const FLOOD: usize = 10_000;
        let gateway = spawn_gateway().await;
        let stream = TcpStream::connect(gateway.addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        // Read while writing: the gateway reads no further frame until its ACK is out.
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            let _ = tokio::time::timeout(PATIENCE, read.read_to_end(&mut seen)).await;
            seen
        });
        let mut flood = PREFACE.to_vec();
        for _ in 0..FLOOD {
            flood.extend(frame(SETTINGS, 0, 0, &[]));
        }
        flood.extend(frame(HEADERS, 0x5, 1, &get_headers()));
        flood.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
        write.write_all(&flood).await.unwrap();

        let seen = reader.await.unwrap();

        let frames = frames(&seen);
        // The gateway's own SETTINGS, then an ACK for each of ours.
        let settings = frames.iter().filter(|(kind, _)| *kind == SETTINGS).count();
        assert_eq!(
            settings,
            FLOOD + 1,
            "one ACK per SETTINGS frame, plus the gateway's own"
        );
        assert!(
            frames.iter().any(|(kind, _)| *kind == HEADERS),
            "the request was answered"
        );
        assert_eq!(gateway.echo.hits(), 1);
    }

    #[tokio::test]
    async fn an_http2_request_without_resets_is_served() {
        let gateway = spawn_gateway().await;
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        let mut request = PREFACE.to_vec();
        request.extend(frame(SETTINGS, 0, 0, &[]));
        request.extend(frame(HEADERS, 0x5, 1, &get_headers()));
        // GOAWAY(last stream 1, NO_ERROR): the gateway answers stream 1, then closes.
        request.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
        stream.write_all(&request).await.unwrap();

        let (seen, _) = read_bytes_until_closed(&mut stream).await;

        let kinds: Vec<u8> = frames(&seen).into_iter().map(|(kind, _)| kind).collect();
        assert!(kinds.contains(&HEADERS), "no response HEADERS in {kinds:?}");
        assert_eq!(gateway.echo.hits(), 1);
    }
}
