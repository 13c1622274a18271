//! HTTP/1.1 as the gateway speaks it to an upstream: a request head written into one buffer, an
//! answer's head parsed in place and its body's framing decoded as it streams.
//!
//! hyper's client did this behind a channel and a dispatcher per connection; the exchange was
//! about a quarter of the gateway's work per request. What a reverse proxy needs of it is small:
//! its own requests come from hyper's server (valid names and values, `Transfer-Encoding` and
//! other hop-by-hop fields already removed), and answers are read strictly. An answer with both
//! `Content-Length` and `Transfer-Encoding`, differing lengths, a malformed chunk or a head past
//! [`MAX_HEAD`] is refused rather than guessed at, so an upstream cannot smuggle a second answer
//! onto a kept-alive connection.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// The longest answer head read (hyper's client allowed about 400 KiB; upstreams are ours).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields an answer may have (hyper's default).
const MAX_HEADERS: usize = 100;
const FEW_HEADERS: usize = 16;
/// Room for the fields the gateway adds to an answer (the correlation id, the three rate-limit
/// fields), so that adding them does not grow the map.
const ADDED_TO_ANSWERS: usize = 4;
const TOO_MANY: Malformed = Malformed("too many answer header fields");
/// The longest chunk-size line (extensions and CRLF included), and the most bytes the trailer
/// section may take (its closing empty line included).
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// Why an answer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// How a request's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Neither length nor chunks: the body is whatever comes until the upstream closes.
    UntilClose,
}

/// Chooses the request body's framing from its head and what the body knows of its size; the
/// second value is the field that announces it, when the head has none.
///
/// # Errors
/// A `Content-Length` that is not a number (hyper's server lets none through).
pub fn request_framing(
    method: &Method,
    headers: &HeaderMap,
    empty: bool,
    exact: Option<u64>,
) -> Result<(RequestFraming, Option<Announce>), Malformed> {
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        let length = parse_length(length.as_bytes()).ok_or(Malformed("invalid request content-length"))?;
        let framing = if length == 0 {
            RequestFraming::Empty
        } else {
            RequestFraming::Length(length)
        };
        return Ok((framing, None));
    }
    if empty || exact == Some(0) {
        // A body-bearing method says its body is empty, as hyper's client did.
        let announce =
            matches!(*method, Method::POST | Method::PUT | Method::PATCH).then_some(Announce::Length(0));
        return Ok((RequestFraming::Empty, announce));
    }
    Ok(match exact {
        Some(length) => (RequestFraming::Length(length), Some(Announce::Length(length))),
        None => (RequestFraming::Chunked, Some(Announce::Chunked)),
    })
}

/// The field a request head gains to say how its body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    Length(u64),
    Chunked,
}

/// A request head to write: `path` is the origin form (path and query).
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// Written in place of any `Host` among `headers` (the client's, which the proxy passed on
    /// as `x-forwarded-host`): the upstream is addressed by its own authority.
    pub host: Option<&'a HeaderValue>,
    pub announce: Option<Announce>,
    /// Written as `x-request-deadline-ms` (the gateway removed any the client sent).
    pub deadline_ms: Option<u64>,
}

impl RequestHead<'_> {
    /// Writes the head into `out`. The fields the gateway adds are written straight into it
    /// rather than inserted among the request's headers first, so that the headers can stay
    /// shared between a request's attempts.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(if self.path.is_empty() {
            b"/"
        } else {
            self.path.as_bytes()
        });
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if let Some(host) = self.host {
            field(out, b"host", host.as_bytes());
        }
        for (name, value) in self.headers {
            if self.host.is_some() && name == header::HOST {
                continue;
            }
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        match self.announce {
            Some(Announce::Length(length)) => {
                out.extend_from_slice(b"content-length: ");
                push_number(out, length, 10);
                out.extend_from_slice(b"\r\n");
            }
            Some(Announce::Chunked) => field(out, b"transfer-encoding", b"chunked"),
            None => {}
        }
        if let Some(ms) = self.deadline_ms {
            out.extend_from_slice(mercato_resilience::deadline::HEADER.as_bytes());
            out.extend_from_slice(b": ");
            push_number(out, ms, 10);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes a chunk's size line (`{len:x}\r\n`) into `out`.
pub fn encode_chunk_size(out: &mut Vec<u8>, len: usize) {
    push_number(out, len as u64, 16);
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in `radix` (10 or 16, lower case) without formatting machinery.
fn push_number(out: &mut Vec<u8>, n: u64, radix: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(rest % radix) as usize];
        rest /= radix;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// An answer's head as read: the response (without its body), how its body is framed, and
/// whether the connection may carry another request after it.
#[derive(Debug)]
pub struct Head {
    pub response: http::Response<()>,
    pub framing: BodyFraming,
    pub keep_alive: bool,
}

/// Parses the answer at the start of `buffer`, taking its head out of it. `Ok(None)`: the head
/// is not complete yet. Informational answers (`100 Continue`, `103 Early Hints`) are passed
/// over; the final one is returned.
///
/// # Errors
/// [`Malformed`] for anything that is not an HTTP/1.x answer this client reads safely.
pub fn parse_head(buffer: &mut BytesMut, request: &Method) -> Result<Option<Head>, Malformed> {
    // Room for a few fields first: the arrays are filled in on every call, and most answers
    // have a handful of fields.
    match parse_head_with::<FEW_HEADERS>(buffer, request) {
        Err(TOO_MANY) => parse_head_with::<MAX_HEADERS>(buffer, request),
        other => other,
    }
}

/// [`parse_head`] with room for `N` fields.
fn parse_head_with<const N: usize>(
    buffer: &mut BytesMut,
    request: &Method,
) -> Result<Option<Head>, Malformed> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; N];
        let mut parsed = httparse::Response::new(&mut fields);
        let length = match parsed.parse(buffer) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD => {
                return Err(Malformed("answer head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(TOO_MANY),
            Err(_) => return Err(Malformed("not an HTTP/1.x answer")),
        };
        let code = parsed.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| Malformed("invalid status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Malformed("an upgrade nobody asked for"));
        }
        if status.is_informational() {
            buffer.advance(length);
            continue;
        }
        let http10 = parsed.version == Some(0);
        // Where each field lies in the head, so that its value can share the head's bytes.
        let base = buffer.as_ptr() as usize;
        let mut spans = [Span::default(); N];
        let mut kept = 0;
        let mut length_field: Option<u64> = None;
        let mut chunked = None;
        let mut close = http10;
        // A `Connection` field naming other fields stays, so that the proxy removes those too.
        let mut names_fields = false;
        for field in parsed.headers.iter() {
            let name = field.name.as_bytes();
            let value = field.value;
            let hop = hop_by_hop(name);
            if hop == Some(TRANSFER_ENCODING) {
                // Only the last coding tells how the message ends.
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if hop == Some(CONNECTION) {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        close &= !http10;
                    } else if !token.is_empty() && hop_by_hop(token).is_none() {
                        names_fields = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_length(value).ok_or(Malformed("invalid content-length"))?;
                if length_field.is_some_and(|seen| seen != n) {
                    return Err(Malformed("conflicting content-length"));
                }
                length_field = Some(n);
            }
            // Hop-by-hop fields describe this connection, not the answer: not passed on.
            if hop.is_none() || hop == Some(CONNECTION) {
                spans[kept] = Span {
                    name: (offset(name, base)?, name.len() as u32),
                    value: (offset(value, base)?, value.len() as u32),
                    connection: hop.is_some(),
                };
                kept += 1;
            }
        }
        let head = buffer.split_to(length).freeze();
        let mut headers = HeaderMap::with_capacity(kept + ADDED_TO_ANSWERS);
        for span in &spans[..kept] {
            if span.connection && !names_fields {
                continue;
            }
            let (at, len) = (span.name.0 as usize, span.name.1 as usize);
            let name =
                HeaderName::from_bytes(&head[at..at + len]).map_err(|_| Malformed("invalid header name"))?;
            let (at, len) = (span.value.0 as usize, span.value.1 as usize);
            let value = HeaderValue::from_maybe_shared(head.slice(at..at + len))
                .map_err(|_| Malformed("invalid header value"))?;
            headers.append(name, value);
        }
        let framing = if *request == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            BodyFraming::Empty
        } else {
            match (chunked, length_field) {
                (Some(_), Some(_)) => return Err(Malformed("both content-length and transfer-encoding")),
                (Some(true), None) => BodyFraming::Chunked,
                (Some(false), None) | (None, None) => {
                    close = true;
                    BodyFraming::UntilClose
                }
                (None, Some(0)) => BodyFraming::Empty,
                (None, Some(n)) => BodyFraming::Length(n),
            }
        };
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive: !close,
        }));
    }
}

/// The fields that describe one hop, not the message (RFC 9110 §7.6.1), in lower case.
pub static HOP_BY_HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
const CONNECTION: usize = 0;
const TRANSFER_ENCODING: usize = 6;

/// The index of `name` (in any case) in [`HOP_BY_HOP_NAMES`].
fn hop_by_hop(name: &[u8]) -> Option<usize> {
    HOP_BY_HOP_NAMES
        .iter()
        .position(|hop| hop.len() == name.len() && hop.as_bytes().eq_ignore_ascii_case(name))
}

/// Where a kept field's name and value lie in its head: (offset, length) each.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
    connection: bool,
}

/// Where `field` starts in the buffer starting at `base`.
fn offset(field: &[u8], base: usize) -> Result<u32, Malformed> {
    u32::try_from(field.as_ptr() as usize - base).map_err(|_| Malformed("answer head too large"))
}

/// A decimal `Content-Length` (digits only, no sign, no spaces, fits in a `u64`).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// What the decoder made of the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The body has ended.
    End,
    /// More bytes are needed.
    More,
}

/// Decodes an answer's body from the connection's read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    Chunk(ChunkState),
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
}

impl Decoder {
    #[must_use]
    pub fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => Self::Done,
            BodyFraming::Length(n) => Self::Length(n),
            BodyFraming::Chunked => Self::Chunk(ChunkState::Size),
            BodyFraming::UntilClose => Self::UntilClose,
        }
    }

    #[must_use]
    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }

    /// The body's bytes still to come, when known.
    #[must_use]
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            Self::Done => Some(0),
            Self::Chunk(_) | Self::UntilClose => None,
        }
    }

    /// Takes what it can from `buffer`. Bytes after the body's end stay in it.
    ///
    /// # Errors
    /// [`Malformed`] chunk framing.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match self {
                Self::Done => return Ok(Step::End),
                Self::UntilClose => {
                    return Ok(if buffer.is_empty() {
                        Step::More
                    } else {
                        Step::Data(buffer.split().freeze())
                    });
                }
                Self::Length(left) => {
                    let step = take_up_to(left, buffer);
                    if *left == 0 {
                        *self = Self::Done;
                    }
                    return Ok(step);
                }
                Self::Chunk(state) => match state {
                    ChunkState::Size => {
                        let Some(line) = line_end(buffer, MAX_CHUNK_LINE, "chunk size line too long")? else {
                            return Ok(Step::More);
                        };
                        let size = chunk_size(&buffer[..line])?;
                        buffer.advance(line + 2);
                        *state = if size == 0 {
                            ChunkState::Trailers(0)
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    ChunkState::Data(left) => {
                        let step = take_up_to(left, buffer);
                        if *left == 0 {
                            *state = ChunkState::DataEnd;
                        }
                        return Ok(step);
                    }
                    ChunkState::DataEnd => {
                        if buffer.len() < 2 {
                            return Ok(Step::More);
                        }
                        if &buffer[..2] != b"\r\n" {
                            return Err(Malformed("chunk data not followed by CRLF"));
                        }
                        buffer.advance(2);
                        *state = ChunkState::Size;
                    }
                    ChunkState::Trailers(seen) => {
                        // `seen` never passes MAX_TRAILERS: each line fits what was left.
                        let Some(line) = line_end(buffer, MAX_TRAILERS - *seen, "trailers too large")? else {
                            return Ok(Step::More);
                        };
                        buffer.advance(line + 2);
                        if line == 0 {
                            *self = Self::Done;
                        } else {
                            // Trailer fields are not passed on (nothing upstream sends them).
                            *seen += line + 2;
                        }
                    }
                },
            }
        }
    }
}

/// As much of the `left` bytes still due as `buffer` holds, counted off `left`.
fn take_up_to(left: &mut u64, buffer: &mut BytesMut) -> Step {
    if buffer.is_empty() {
        return Step::More;
    }
    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buffer.len());
    *left -= take as u64;
    Step::Data(buffer.split_to(take).freeze())
}

/// The index of the CRLF ending the first line of `buffer`, if it has arrived; the line with its
/// CRLF may take at most `limit` bytes.
fn line_end(buffer: &[u8], limit: usize, too_long: &'static str) -> Result<Option<usize>, Malformed> {
    match memchr::memchr(b'\n', buffer) {
        Some(lf) if lf >= limit => Err(Malformed(too_long)),
        Some(0) => Err(Malformed("bare LF in chunk framing")),
        Some(lf) if buffer[lf - 1] != b'\r' => Err(Malformed("bare LF in chunk framing")),
        Some(lf) => Ok(Some(lf - 1)),
        None if buffer.len() >= limit => Err(Malformed(too_long)),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits, then nothing or extensions after `;` (with optional
/// whitespace before it).
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(Malformed("invalid chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err(Malformed("invalid chunk size"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        (n << 4) | u64::from(digit)
    }))
}

#[cfg(test)]
mod tests;
