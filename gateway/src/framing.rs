//! Request framing followed on the bytes of each client connection, beneath hyper, so that a
//! request head with both `Content-Length` and `Transfer-Encoding` is refused with `400` and its
//! connection closed (RFC 9112 §6.1 allows either that or reading it as chunked and closing).
//! hyper reads such a request as chunked and drops its `Content-Length` before any service sees
//! it, so only the bytes can tell.
//!
//! [`Framed`] finds each request head as its bytes pass to hyper, skips its body the way hyper's
//! decoder will (a length, or chunked framing byte for byte as hyper parses it) and, on a
//! conflicting head, hands hyper a NUL byte in place of the head's last line feed and nothing
//! after it: hyper answers any earlier pipelined request first, then `400`, and closes.
//!
//! Whatever it does not follow (an HTTP/2 preface, an upgrade or `CONNECT`, a head or chunk
//! framing hyper will refuse anyway) ends the following for that connection. That is safe:
//! hyper's own reading of a conflicting head smuggles nothing; this only makes it a refusal.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What hyper's parser is given in place of a conflicting head's last line feed: a NUL is no
/// line ending, no header byte and no method byte, so the head fails to parse with a header
/// error (`400`) wherever it falls.
const REFUSAL: &[u8] = b"\0\r\n\r\n";

/// A client's stream with its HTTP/1 request framing followed.
pub struct Framed<S> {
    inner: S,
    peer: SocketAddr,
    track: Track,
    /// A copy of the part of a head that came in an earlier read, to read its lines whole.
    /// Nothing is held back from hyper: its HTTP/2 detection and head timeout see every byte.
    split_head: Vec<u8>,
    /// The refusal, as far as hyper had no room for it yet.
    due: &'static [u8],
    /// A head longer than this is not followed: hyper refuses it (`431`).
    max_head: usize,
}

impl<S> Framed<S> {
    /// Follows `inner`, a connection from `peer`; `max_head` is the most a head may take
    /// (hyper's own buffer limit).
    pub fn new(inner: S, peer: SocketAddr, max_head: usize) -> Self {
        Self {
            inner,
            peer,
            track: Track::Head(HeadScan::default()),
            split_head: Vec::new(),
            due: &[],
            max_head,
        }
    }

    fn hand_on(&mut self, buf: &mut ReadBuf<'_>) {
        let (now, later) = self.due.split_at(buf.remaining().min(self.due.len()));
        buf.put_slice(now);
        self.due = later;
    }

    /// Follows the bytes just read; returns where in them a conflicting head's last line feed
    /// is.
    fn follow(&mut self, read: &[u8]) -> Option<usize> {
        let (followed, earlier) = if self.split_head.is_empty() {
            (self.track.follow(read), 0)
        } else {
            let earlier = self.split_head.len();
            self.split_head.extend_from_slice(read);
            (self.track.follow(&self.split_head), earlier)
        };
        match followed {
            Followed::All => self.split_head.clear(),
            Followed::PartHead(at) => {
                if earlier == 0 {
                    self.split_head.extend_from_slice(&read[at..]);
                } else {
                    self.split_head.drain(..at);
                }
                if self.split_head.len() > self.max_head {
                    self.split_head = Vec::new();
                    self.track = Track::Off;
                }
            }
            // The head ended in this read, so its last line feed is in it.
            Followed::Conflict(last) => return Some(last - earlier),
        }
        None
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.track {
            Track::Off => return Pin::new(&mut this.inner).poll_read(cx, buf),
            Track::Refused if this.due.is_empty() => return Poll::Pending,
            Track::Refused => {
                this.hand_on(buf);
                return Poll::Ready(Ok(()));
            }
            Track::Head(_) | Track::Body(_) | Track::Chunked(_) => {}
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if read.is_empty() {
            this.track = Track::Off;
            return Poll::Ready(Ok(()));
        }
        if let Some(last) = this.follow(read) {
            tracing::debug!(peer = %this.peer, "a request head with both Content-Length and Transfer-Encoding refused");
            buf.set_filled(before + last);
            this.track = Track::Refused;
            this.split_head = Vec::new();
            this.due = REFUSAL;
            // At least the line feed's place is free, so the read is never empty (an end).
            this.hand_on(buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Where the next byte from the client falls.
#[derive(Debug)]
enum Track {
    Head(HeadScan),
    Body(u64),
    Chunked(Chunk),
    /// Not followed any more: bytes pass straight through.
    Off,
    /// A conflicting head was replaced; nothing after it reaches hyper.
    Refused,
}

/// What following a run of bytes found.
#[derive(Debug, PartialEq, Eq)]
enum Followed {
    /// Every byte is framed; none starts a head that is not whole.
    All,
    /// A head starts at this offset and is not whole yet.
    PartHead(usize),
    /// A head with both `Content-Length` and `Transfer-Encoding` ends with the line feed at this
    /// offset.
    Conflict(usize),
}

impl Track {
    /// Follows `bytes`, which continue where the last call's stopped, except that a head not
    /// whole is given again from its start with more after it.
    fn follow(&mut self, bytes: &[u8]) -> Followed {
        let mut at = 0;
        loop {
            match self {
                Track::Head(head) => {
                    let Some(len) = head.scan(&bytes[at..]) else {
                        return if head.started() {
                            Followed::PartHead(at)
                        } else {
                            Followed::All
                        };
                    };
                    *self = match head.framing() {
                        Framing::Conflict => return Followed::Conflict(at + len - 1),
                        Framing::Length(0) => Track::Head(HeadScan::default()),
                        Framing::Length(n) => Track::Body(n),
                        Framing::Chunked => Track::Chunked(Chunk::Start { size: 0 }),
                        Framing::Unfollowed => Track::Off,
                    };
                    at += len;
                }
                Track::Body(left) => {
                    let here = u64::try_from(bytes.len() - at).unwrap_or(u64::MAX);
                    if here < *left {
                        *left -= here;
                        return Followed::All;
                    }
                    at += usize::try_from(*left).unwrap_or(usize::MAX);
                    *self = Track::Head(HeadScan::default());
                }
                Track::Chunked(chunk) => match chunk.skip(&bytes[at..]) {
                    Skipped::More => return Followed::All,
                    Skipped::Ended(len) => {
                        at += len;
                        *self = Track::Head(HeadScan::default());
                    }
                    Skipped::Broken => {
                        *self = Track::Off;
                        return Followed::All;
                    }
                },
                Track::Off | Track::Refused => return Followed::All,
            }
            if at == bytes.len() {
                return Followed::All;
            }
        }
    }
}

/// How the body after a whole head is framed.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    Conflict,
    /// Something hyper refuses or hands over as a tunnel: not followed further.
    Unfollowed,
}

/// A request head read line by line, resumable where the last look stopped.
#[derive(Debug, Default)]
struct HeadScan {
    line_start: usize,
    search_from: usize,
    request_line: bool,
    content_length: bool,
    length: Option<u64>,
    bad_length: bool,
    /// Whether the last `Transfer-Encoding` ends in `chunked`, if there is one.
    chunked: Option<bool>,
    tunnel: bool,
}

impl HeadScan {
    /// Whether any byte of the head has been seen (blank lines before a request line count,
    /// as hyper skips them).
    fn started(&self) -> bool {
        self.search_from > 0
    }

    /// Reads on in `head` (which starts where the head does) and returns the head's length
    /// once it is whole.
    fn scan(&mut self, head: &[u8]) -> Option<usize> {
        while let Some(found) = memchr::memchr(b'\n', &head[self.search_from..]) {
            let end = self.search_from + found;
            let line = &head[self.line_start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.line_start = end + 1;
            self.search_from = end + 1;
            if !self.request_line {
                if !line.is_empty() {
                    self.request_line = true;
                    self.tunnel = line.starts_with(b"CONNECT ") || line.starts_with(b"PRI * HTTP/2.0");
                }
            } else if line.is_empty() {
                return Some(end + 1);
            } else {
                self.field(line);
            }
        }
        self.search_from = head.len();
        None
    }

    /// Notes the header fields that frame the body. hyper refuses space before the colon, so
    /// a name is matched only directly before one; most lines are passed over on their first
    /// byte, as every head crosses here.
    fn field(&mut self, line: &[u8]) {
        let value_of = |name: &[u8]| {
            (line.get(name.len()) == Some(&b':') && line[..name.len()].eq_ignore_ascii_case(name))
                .then(|| trim(&line[name.len() + 1..]))
        };
        match line.first().map(|b| b | 0x20) {
            Some(b'c') => {
                let Some(value) = value_of(b"content-length") else {
                    return;
                };
                self.content_length = true;
                // hyper takes a list of equal lengths, on one line or several, as that length.
                for item in value.split(|&b| b == b',') {
                    match (digits(trim(item)), self.length) {
                        (Some(n), None) => self.length = Some(n),
                        (Some(n), Some(before)) if n == before => {}
                        _ => self.bad_length = true,
                    }
                }
            }
            Some(b't') => {
                if let Some(value) = value_of(b"transfer-encoding") {
                    let last = value.rsplit(|&b| b == b',').next().map(trim);
                    self.chunked = Some(last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")));
                }
            }
            Some(b'u') => self.tunnel |= value_of(b"upgrade").is_some(),
            _ => {}
        }
    }

    fn framing(&self) -> Framing {
        if self.content_length && self.chunked.is_some() {
            Framing::Conflict
        } else if self.tunnel || self.bad_length || self.chunked == Some(false) {
            Framing::Unfollowed
        } else if self.chunked == Some(true) {
            Framing::Chunked
        } else {
            Framing::Length(self.length.unwrap_or(0))
        }
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0_u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Chunked framing in hyper's decoder's states, so both agree where the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start {
        size: u64,
    },
    Size {
        size: u64,
    },
    SizeLws {
        size: u64,
    },
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Body {
        left: u64,
    },
    BodyCr,
    BodyLf,
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
    /// After the body's last byte.
    End,
}

enum Skipped {
    /// All of the bytes are the body's; it goes on.
    More,
    /// The body ends after this many bytes.
    Ended(usize),
    /// hyper will refuse this framing.
    Broken,
}

impl Chunk {
    fn skip(&mut self, bytes: &[u8]) -> Skipped {
        let mut at = 0;
        while at < bytes.len() {
            if let Chunk::Body { left } = self {
                let here = u64::try_from(bytes.len() - at).unwrap_or(u64::MAX);
                let taken = here.min(*left);
                *left -= taken;
                at += usize::try_from(taken).unwrap_or(usize::MAX);
                if *left == 0 {
                    *self = Chunk::BodyCr;
                }
                continue;
            }
            let byte = bytes[at];
            at += 1;
            match self.step(byte) {
                None => return Skipped::Broken,
                Some(Chunk::End) => return Skipped::Ended(at),
                Some(next) => *self = next,
            }
        }
        Skipped::More
    }

    /// The state after `byte`; `None` where hyper's decoder fails.
    fn step(self, byte: u8) -> Option<Chunk> {
        let hex = |size: u64| {
            let digit = char::from(byte).to_digit(16)?;
            size.checked_mul(16)?.checked_add(u64::from(digit))
        };
        Some(match (self, byte) {
            (Chunk::Start { size }, _) => Chunk::Size { size: hex(size)? },
            (Chunk::Size { size }, b'\t' | b' ') => Chunk::SizeLws { size },
            (Chunk::Size { size } | Chunk::SizeLws { size }, b';') => Chunk::Extension { size },
            (Chunk::Size { size } | Chunk::SizeLws { size } | Chunk::Extension { size }, b'\r') => {
                Chunk::SizeLf { size }
            }
            (Chunk::Size { size }, _) => Chunk::Size { size: hex(size)? },
            (Chunk::SizeLws { size }, b'\t' | b' ') => Chunk::SizeLws { size },
            (Chunk::Extension { .. }, b'\n') => return None,
            (Chunk::Extension { size }, _) => Chunk::Extension { size },
            (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::EndCr,
            (Chunk::SizeLf { size }, b'\n') => Chunk::Body { left: size },
            (Chunk::BodyCr, b'\r') => Chunk::BodyLf,
            (Chunk::BodyLf, b'\n') => Chunk::Start { size: 0 },
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
            (Chunk::EndLf, b'\n') => Chunk::End,
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests;
