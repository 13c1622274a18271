use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

use super::{Framed, REFUSAL};

/// A client whose bytes arrive in the given pieces, one per read, then the end.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(mut piece) = this.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                this.0.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// What hyper would read through [`Framed`] from a client sending `pieces`, through reads of
/// at most `room` bytes, until the end or until nothing more comes.
fn through(pieces: &[&[u8]], room: usize) -> Vec<u8> {
    through_limited(pieces, room, 64 * 1024)
}

fn through_limited(pieces: &[&[u8]], room: usize, max_head: usize) -> Vec<u8> {
    let client = Pieces(
        pieces
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.to_vec())
            .collect(),
    );
    let mut framed = Framed::new(client, "127.0.0.1:1".parse().unwrap(), max_head);
    let mut cx = Context::from_waker(Waker::noop());
    let mut seen = Vec::new();
    let mut space = vec![0_u8; room];
    loop {
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut framed).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return seen,
            Poll::Ready(Ok(())) => seen.extend_from_slice(buf.filled()),
            Poll::Ready(Err(error)) => panic!("{error}"),
            Poll::Pending => return seen,
        }
    }
}

/// `stream` sent whole, and split in two at every byte, read through buffers large and small.
fn every_split(stream: &[u8], expected: &[u8]) {
    for room in [1, 7, 64 * 1024] {
        assert_eq!(through(&[stream], room), expected, "whole, room {room}");
        for at in 0..=stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(
                through(&[a, b], room),
                expected,
                "split at {at}, room {room}: {:?} | {:?}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            );
        }
    }
}

/// What hyper reads of `stream` when the head starting at `head` conflicts: up to that head's
/// last line feed, then the refusal.
fn refused_at(stream: &[u8], head: usize) -> Vec<u8> {
    let end = head + stream[head..].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 3;
    [&stream[..end], REFUSAL].concat()
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const POST: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
const CHUNKED: &[u8] =
    b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
const CONFLICT: &[u8] =
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /private HTTP/1.1\r\n\r\n";

#[test]
fn requests_without_a_conflict_pass_unchanged_however_they_arrive() {
    let stream = [GET, POST, CHUNKED, GET].concat();
    every_split(&stream, &stream);
}

#[test]
fn a_head_with_content_length_and_transfer_encoding_is_replaced_by_the_refusal() {
    every_split(CONFLICT, &refused_at(CONFLICT, 0));
}

#[test]
fn the_refusal_comes_after_the_pipelined_requests_before_it() {
    let before = [GET, POST, CHUNKED].concat();
    let stream = [&before, CONFLICT].concat();
    every_split(&stream, &refused_at(&stream, before.len()));
}

#[test]
fn the_conflict_is_found_in_either_order_and_any_case() {
    let te_first = b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 3\r\n\r\n0\r\n\r\n";
    every_split(te_first, &refused_at(te_first, 0));
    // A Transfer-Encoding hyper refuses on its own conflicts just the same.
    let gzip = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\n\r\nabc";
    every_split(gzip, &refused_at(gzip, 0));
}

#[test]
fn a_conflicting_head_inside_a_body_is_body() {
    let in_length = [
        format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", CONFLICT.len()).as_bytes(),
        CONFLICT,
        GET,
    ]
    .concat();
    every_split(&in_length, &in_length);
    let in_chunks = [
        format!(
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            CONFLICT.len()
        )
        .as_bytes(),
        CONFLICT,
        b"\r\n0\r\n\r\n",
        GET,
    ]
    .concat();
    every_split(&in_chunks, &in_chunks);
}

#[test]
fn blank_lines_before_a_request_line_belong_to_its_head() {
    let stream = [b"\r\n\r\n".as_slice(), CONFLICT].concat();
    every_split(&stream, &refused_at(&stream, 4));
}

#[test]
fn what_hyper_refuses_or_tunnels_ends_the_following() {
    for first in [
        // Broken chunking and unequal lengths: hyper answers 400 and closes, so what follows
        // is never read as a request.
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".as_slice(),
        b"POST /a HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\nab",
        // A tunnel's bytes are no requests.
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let stream = [first, CONFLICT].concat();
        every_split(&stream, &stream);
    }
}

#[test]
fn equal_lengths_in_a_list_are_one_length_as_to_hyper() {
    let first = b"POST /a HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab";
    let stream = [first.as_slice(), CONFLICT].concat();
    every_split(&stream, &refused_at(&stream, first.len()));
}

#[test]
fn a_head_past_the_limit_ends_the_following() {
    let long = [
        b"GET /a HTTP/1.1\r\nX-Long: ".as_slice(),
        &[b'x'; 300],
        b"\r\n\r\n",
    ]
    .concat();
    let stream = [&long, CONFLICT].concat();
    // The first read ends inside the head, past the limit.
    let cut = long.len() - 4;
    let seen = through_limited(&[&stream[..cut], &stream[cut..]], 4096, 200);
    assert_eq!(
        seen, stream,
        "hyper answers 431 to the long head and reads no further"
    );
}

#[test]
fn a_client_that_stops_mid_head_hands_hyper_what_it_sent() {
    every_split(b"GET /a HTTP/1.1\r\nHost:", b"GET /a HTTP/1.1\r\nHost:");
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let body = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        Just(GET.to_vec()),
        body.clone().prop_map(|body| {
            [
                format!("PUT /a HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
                &body,
            ]
            .concat()
        }),
        proptest::collection::vec(body, 0..4).prop_map(|chunks| {
            let mut request = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                request.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
                request.extend_from_slice(chunk);
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"0\r\n\r\n");
            request
        }),
    ]
}

proptest! {
    /// Any run of well-framed requests, arriving in any pieces, reaches hyper unchanged; one
    /// conflicting head after them is refused exactly where it starts.
    #[test]
    fn framing_is_followed_across_any_pieces(
        requests in proptest::collection::vec(request(), 1..5),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        conflict in any::<bool>(),
        room in 1_usize..200,
    ) {
        let before = requests.concat();
        let stream = if conflict { [&before, CONFLICT].concat() } else { before.clone() };
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for cut in cuts {
            pieces.push(&stream[from..cut]);
            from = cut;
        }
        pieces.push(&stream[from..]);
        let expected = if conflict { refused_at(&stream, before.len()) } else { stream.clone() };
        prop_assert_eq!(through(&pieces, room), expected);
    }
}
