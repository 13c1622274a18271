use super::*;

fn head(bytes: &[u8], method: &Method) -> Result<Option<Head>, Malformed> {
    parse_head(&mut BytesMut::from(bytes), method)
}

fn parsed(bytes: &[u8]) -> Head {
    head(bytes, &Method::GET).unwrap().unwrap()
}

/// Feeds `wire` to a decoder `split` bytes at a time; the body and whatever followed its end.
fn decode_in_pieces(
    framing: BodyFraming,
    wire: &[u8],
    split: usize,
) -> Result<(Vec<u8>, Vec<u8>), Malformed> {
    let mut decoder = Decoder::new(framing);
    let mut buffer = BytesMut::new();
    let mut body = Vec::new();
    let mut pieces = wire.chunks(split);
    loop {
        match decoder.decode(&mut buffer)? {
            Step::Data(data) => body.extend_from_slice(&data),
            Step::End => return Ok((body, buffer.to_vec())),
            Step::More => match pieces.next() {
                Some(piece) => buffer.extend_from_slice(piece),
                None => return Err(Malformed("ended early")),
            },
        }
    }
}

#[test]
fn a_request_head_is_written_in_origin_form_with_every_field() {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
    headers.append("x-tag", HeaderValue::from_static("a"));
    headers.append("x-tag", HeaderValue::from_static("b"));
    let upstream = HeaderValue::from_static("orders:8080");
    let mut out = Vec::new();
    let head = RequestHead {
        method: &Method::POST,
        path: "/api/orders?limit=2",
        headers: &headers,
        host: Some(&upstream),
        announce: Some(Announce::Length(12)),
        deadline_ms: Some(2500),
    };
    head.encode(&mut out);
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "POST /api/orders?limit=2 HTTP/1.1\r\nhost: orders:8080\r\nx-tag: a\r\nx-tag: b\r\n\
         content-length: 12\r\nx-request-deadline-ms: 2500\r\n\r\n",
        "the upstream's own host in place of the client's"
    );
    out.clear();
    let head = RequestHead {
        method: &Method::OPTIONS,
        path: "",
        headers: &headers,
        host: None,
        announce: Some(Announce::Chunked),
        deadline_ms: None,
    };
    head.encode(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "OPTIONS / HTTP/1.1\r\nhost: shop.example\r\nx-tag: a\r\nx-tag: b\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn a_request_body_is_framed_by_its_length_or_in_chunks() {
    let none = HeaderMap::new();
    assert_eq!(
        request_framing(&Method::GET, &none, true, Some(0)),
        Ok((RequestFraming::Empty, None))
    );
    assert_eq!(
        request_framing(&Method::POST, &none, true, Some(0)),
        Ok((RequestFraming::Empty, Some(Announce::Length(0)))),
        "a POST without a body says so"
    );
    assert_eq!(
        request_framing(&Method::PUT, &none, false, Some(5)),
        Ok((RequestFraming::Length(5), Some(Announce::Length(5))))
    );
    assert_eq!(
        request_framing(&Method::POST, &none, false, None),
        Ok((RequestFraming::Chunked, Some(Announce::Chunked)))
    );

    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
    assert_eq!(
        request_framing(&Method::POST, &headers, false, None),
        Ok((RequestFraming::Length(12), None)),
        "the client's own length stands"
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1e3"));
    assert!(request_framing(&Method::POST, &headers, false, None).is_err());
}

#[test]
fn chunk_sizes_are_written_in_hex() {
    for (len, text) in [(0, "0"), (1, "1"), (15, "f"), (16, "10"), (65_536, "10000")] {
        let mut out = Vec::new();
        encode_chunk_size(&mut out, len);
        assert_eq!(out, format!("{text}\r\n").as_bytes());
    }
}

#[test]
fn an_answer_head_is_parsed_with_its_fields_and_framing() {
    let wire = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n{}";
    let mut buffer = BytesMut::from(&wire[..]);
    let head = parse_head(&mut buffer, &Method::POST).unwrap().unwrap();
    assert_eq!(head.response.status(), StatusCode::CREATED);
    assert_eq!(head.response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        head.response.headers().get_all(header::SET_COOKIE).iter().count(),
        2
    );
    assert_eq!(head.framing, BodyFraming::Length(2));
    assert!(head.keep_alive);
    assert_eq!(&buffer[..], b"{}", "the body stays in the buffer");
}

#[test]
fn a_head_split_across_reads_waits_for_its_end() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for cut in 1..wire.len() {
        assert!(
            head(&wire[..cut], &Method::GET).unwrap().is_none(),
            "cut at {cut}"
        );
    }
    assert_eq!(parsed(wire).framing, BodyFraming::Empty);
}

#[test]
fn informational_answers_are_passed_over() {
    let last = parsed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(last.response.status(), StatusCode::OK);
    assert!(last.response.headers().get(header::LINK).is_none());
    assert!(
        head(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            &Method::GET
        )
        .is_err()
    );
}

#[test]
fn answers_without_a_body_are_empty_whatever_their_length_says() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    assert_eq!(
        head(wire, &Method::HEAD).unwrap().unwrap().framing,
        BodyFraming::Empty
    );
    assert_eq!(
        parsed(b"HTTP/1.1 204 No Content\r\n\r\n").framing,
        BodyFraming::Empty
    );
    assert_eq!(
        parsed(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").framing,
        BodyFraming::Empty
    );
}

#[test]
fn connection_close_an_old_version_or_no_length_end_the_connection_after_the_answer() {
    assert!(
        !parsed(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 0\r\n\r\n").keep_alive
    );
    assert!(!parsed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
    assert!(parsed(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").keep_alive);
    let until_close = parsed(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(until_close.framing, BodyFraming::UntilClose);
    assert!(!until_close.keep_alive);
    let gzip_last = parsed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
    assert_eq!(gzip_last.framing, BodyFraming::UntilClose);
    assert_eq!(
        parsed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").framing,
        BodyFraming::Chunked
    );
}

#[test]
fn heads_that_could_smuggle_or_overflow_are_refused() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n5",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n5",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 999999 Nope\r\n\r\n",
    ] {
        assert!(
            head(wire, &Method::GET).is_err(),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    // Repeating one length is allowed (RFC 9110 §8.6 lets a recipient accept it).
    assert_eq!(
        parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").framing,
        BodyFraming::Length(5)
    );
    let mut long = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
    long.resize(MAX_HEAD + 10, b'a');
    assert_eq!(
        head(&long, &Method::GET).unwrap_err(),
        Malformed("answer head too large")
    );
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(head(&many, &Method::GET).is_err());
}

#[test]
fn a_length_delimited_body_ends_at_its_length_in_any_pieces() {
    let wire = b"hello worldHTTP/1.1 200 OK";
    for split in [1, 3, 100] {
        let (body, after) = decode_in_pieces(BodyFraming::Length(11), wire, split).unwrap();
        assert_eq!(body, b"hello world");
        assert!(b"HTTP/1.1 200 OK".starts_with(&after), "split {split}");
    }
}

#[test]
fn a_chunked_body_is_decoded_with_extensions_and_trailers_in_any_pieces() {
    let wire = b"5\r\nhello\r\n6 ;name=value\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Checksum: 1\r\n\r\nNEXT";
    for split in [1, 2, 7, 1000] {
        let (body, after) = decode_in_pieces(BodyFraming::Chunked, wire, split).unwrap();
        assert_eq!(body, b"hello world0123456789", "split {split}");
        assert!(b"NEXT".starts_with(&after));
    }
}

#[test]
fn malformed_chunks_are_refused() {
    for wire in [
        &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
        b"g\r\n",
        b"\r\n",
        b"5\nhello\r\n",
        b"1234567890abcdef0\r\n",
        b"5 5\r\nhello\r\n",
        b"-5\r\nhello\r\n",
    ] {
        assert!(
            decode_in_pieces(BodyFraming::Chunked, wire, 1000).is_err(),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    let mut long = b"5;".to_vec();
    long.resize(MAX_CHUNK_LINE + 10, b'a');
    assert_eq!(
        decode_in_pieces(BodyFraming::Chunked, &long, 1000).unwrap_err(),
        Malformed("chunk size line too long")
    );
}

#[test]
fn a_body_until_close_is_everything_read() {
    let mut decoder = Decoder::new(BodyFraming::UntilClose);
    let mut buffer = BytesMut::from(&b"abc"[..]);
    assert_eq!(
        decoder.decode(&mut buffer),
        Ok(Step::Data(Bytes::from_static(b"abc")))
    );
    assert_eq!(decoder.decode(&mut buffer), Ok(Step::More));
    assert_eq!(decoder.remaining(), None);
}

#[test]
fn hop_by_hop_fields_are_not_passed_on_unless_connection_names_others() {
    let plain = parsed(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nServer: up\r\nContent-Length: 0\r\n\r\n");
    let names: Vec<_> = plain.response.headers().keys().map(HeaderName::as_str).collect();
    assert_eq!(names, ["server", "content-length"]);
    assert!(plain.keep_alive);

    let naming = parsed(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        naming.response.headers()[header::CONNECTION],
        "keep-alive, X-Private"
    );
    assert_eq!(
        naming.response.headers()["x-private"],
        "1",
        "left for the proxy to remove"
    );
}

#[test]
fn an_answer_with_many_fields_is_read_whole_up_to_the_limit() {
    let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..MAX_HEADERS - 1 {
        wire.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let head = parsed(&wire);
    assert_eq!(head.response.headers().len(), MAX_HEADERS);
    assert_eq!(head.response.headers()["x-98"], "98");
    assert_eq!(head.framing, BodyFraming::Empty);
}

#[test]
fn the_trailer_section_is_bounded_to_the_byte() {
    // One trailer line of `line` bytes (its CRLF included), then the closing empty line.
    let section = |line: usize| {
        let mut wire = b"0\r\nX-Pad: ".to_vec();
        wire.resize(3 + line - 2, b'a');
        wire.extend_from_slice(b"\r\n\r\n");
        wire
    };
    let (body, after) = decode_in_pieces(BodyFraming::Chunked, &section(MAX_TRAILERS - 2), 1000).unwrap();
    assert!(body.is_empty() && after.is_empty(), "exactly the limit");
    for line in [MAX_TRAILERS - 1, MAX_TRAILERS, MAX_TRAILERS + 1, 3 * MAX_TRAILERS] {
        for split in [1, 1000] {
            assert_eq!(
                decode_in_pieces(BodyFraming::Chunked, &section(line), split).unwrap_err(),
                Malformed("trailers too large"),
                "{line} bytes in pieces of {split}"
            );
        }
    }
    // Many small lines add up the same way.
    let mut wire = b"0\r\n".to_vec();
    for _ in 0..MAX_TRAILERS / 8 {
        wire.extend_from_slice(b"X-A: 1\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    assert_eq!(
        decode_in_pieces(BodyFraming::Chunked, &wire, 64).unwrap_err(),
        Malformed("trailers too large")
    );
}
