//! A small SMTP client (RFC 5321): enough to hand one plain-text message to a mail relay, with
//! every step bounded by a timeout and every reply classified once.
//!
//! A send is split at SMTP's point of no return, the `.` that ends the message text:
//! [`SmtpClient::prepare`] runs the conversation up to it, and [`Prepared::commit`] sends it. The
//! delivery worker records "committing" in its database between the two, so a crash can never
//! make it send the same message twice; an answer lost after the `.` is
//! [`SmtpError::OutcomeUnknown`], never retried. No TLS and no authentication: the service
//! talks to a relay on a trusted network (a local Postfix, a cluster mail relay, a test sink).

use mercato_runtime::settings::{InvalidSetting, Validate, ensure, positive};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// Where and how email is sent (`[notifications.smtp]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Off by default, so embedded mode needs no mail server; the mailbox works either way.
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// The envelope sender and the `From:` address.
    pub from: String,
    /// Bound on each half of one conversation: everything up to the message text, and the
    /// server's acceptance of it.
    pub timeout_ms: u64,
    /// Sends of one email before it is given up as failed.
    pub max_attempts: u32,
    /// The first retry's delay; each further retry doubles it (up to 64 times), with jitter.
    pub backoff_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 1025,
            from: "no-reply@mercato.local".into(),
            timeout_ms: 10_000,
            max_attempts: 5,
            backoff_ms: 1_000,
        }
    }
}

impl SmtpConfig {
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl Validate for SmtpConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        ensure(
            !self.host.is_empty() && !self.host.chars().any(|c| c.is_whitespace() || c.is_control()),
            "host",
            "must be a host name or address",
        )?;
        ensure(self.port != 0, "port", "must be a port number from 1 to 65535")?;
        if !is_valid_address(&self.from) {
            return Err(InvalidSetting::new(
                "from",
                format!(
                    "{:?} is not a plain email address such as no-reply@example.com",
                    self.from
                ),
            ));
        }
        positive(self.timeout_ms, "timeout_ms")?;
        ensure(self.max_attempts > 0, "max_attempts", "must be at least 1")?;
        positive(self.backoff_ms, "backoff_ms")
    }
}

/// Why a message was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("cannot connect to the mail server at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the mail server did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the connection to the mail server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the mail server answered {command} with {code} {text}")]
    Rejected {
        command: &'static str,
        code: u16,
        text: String,
    },
    #[error("the mail server's answer is not SMTP: {0}")]
    Protocol(String),
    #[error("{0:?} is not an address this client sends to")]
    InvalidAddress(String),
    /// The message text was complete but its acceptance never arrived: the server may have
    /// queued it. Sending again could deliver it twice, so this is final.
    #[error("the mail server may have taken the message ({0}); it is not sent again")]
    OutcomeUnknown(String),
}

impl SmtpError {
    /// True when the same message may go through on a later attempt: the server was away or
    /// slow, or said "try again" (4xx). A 5xx refusal, a bad address and an unknown outcome are
    /// final.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout(_) | Self::Io(_) | Self::Protocol(_) => true,
            Self::Rejected { code, .. } => (400..500).contains(code),
            Self::InvalidAddress(_) | Self::OutcomeUnknown(_) => false,
        }
    }
}

/// One plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// Stable per notification, so a receiving system can tell a copy of it.
    pub message_id: String,
}

/// Sends [`Mail`] to one SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpClient {
    host: String,
    port: u16,
    timeout: Duration,
}

/// A conversation that has sent the whole message text but not the `.` that ends it.
#[derive(Debug)]
pub struct Prepared {
    conn: Connection,
    timeout: Duration,
}

/// Longest reply line accepted (RFC 5321 allows 512 octets).
const MAX_LINE: u64 = 2_048;
/// Most lines in one multi-line reply, so a hostile server cannot stream forever.
const MAX_REPLY_LINES: usize = 128;

impl SmtpClient {
    #[must_use]
    pub fn new(config: &SmtpConfig) -> Self {
        Self {
            host: config.host.clone(),
            port: config.port,
            timeout: config.timeout(),
        }
    }

    /// Connects and runs the conversation up to the end of the message text.
    ///
    /// # Errors
    /// See [`SmtpError`]; nothing was sent when this fails.
    pub async fn prepare(&self, mail: &Mail) -> Result<Prepared, SmtpError> {
        for address in [&mail.from, &mail.to] {
            if !is_valid_address(address) {
                return Err(SmtpError::InvalidAddress(address.clone()));
            }
        }
        let conn = tokio::time::timeout(self.timeout, self.converse(mail))
            .await
            .map_err(|_| SmtpError::Timeout(self.timeout))??;
        Ok(Prepared {
            conn,
            timeout: self.timeout,
        })
    }

    async fn converse(&self, mail: &Mail) -> Result<Connection, SmtpError> {
        let addr = format!("{}:{}", self.host, self.port);
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| SmtpError::Connect { addr, source })?;
        let helo_name = match stream.local_addr()?.ip() {
            std::net::IpAddr::V4(ip) => format!("[{ip}]"),
            std::net::IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
        };
        let mut conn = Connection {
            stream: BufReader::new(stream),
        };
        conn.expect("greeting", &[220]).await?;
        let ehlo = conn.command(&format!("EHLO {helo_name}")).await?;
        // A server too old for EHLO says 500/502; HELO is the RFC 821 fallback.
        if ehlo.code != 250 {
            if (500..=502).contains(&ehlo.code) {
                conn.command(&format!("HELO {helo_name}"))
                    .await?
                    .require("HELO", &[250])?;
            } else {
                ehlo.require("EHLO", &[250])?;
            }
        }
        conn.command(&format!("MAIL FROM:<{}>", mail.from))
            .await?
            .require("MAIL FROM", &[250])?;
        conn.command(&format!("RCPT TO:<{}>", mail.to))
            .await?
            .require("RCPT TO", &[250, 251])?;
        conn.command("DATA").await?.require("DATA", &[354])?;
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc2822)
            .map_err(|e| SmtpError::Protocol(format!("cannot format the date: {e}")))?;
        let text = dot_stuffed(&format_message(mail, &date));
        conn.write(text.as_bytes()).await?;
        Ok(conn)
    }
}

impl Prepared {
    /// Ends the message text; the server's `250` means it has taken responsibility for it.
    ///
    /// # Errors
    /// [`SmtpError::Rejected`] when the server refused it (`4xx` may be retried), or
    /// [`SmtpError::OutcomeUnknown`] when its answer was lost.
    pub async fn commit(mut self) -> Result<(), SmtpError> {
        let answer = tokio::time::timeout(self.timeout, async {
            self.conn.write(b".\r\n").await?;
            self.conn.reply().await
        })
        .await;
        let reply = match answer {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(SmtpError::OutcomeUnknown(e.to_string())),
            Err(_) => {
                return Err(SmtpError::OutcomeUnknown(format!(
                    "no answer within {:?}",
                    self.timeout
                )));
            }
        };
        reply.require("the message", &[250])?;
        // The message is accepted; a failed goodbye changes nothing.
        let quit = Duration::from_secs(1).min(self.timeout);
        let _ = tokio::time::timeout(quit, self.conn.command("QUIT")).await;
        Ok(())
    }

    /// Drops the conversation before the `.`: the server discards the unfinished message.
    pub fn abort(self) {
        drop(self.conn);
    }
}

#[derive(Debug)]
struct Connection {
    stream: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn require(self, command: &'static str, codes: &[u16]) -> Result<Self, SmtpError> {
        if codes.contains(&self.code) {
            Ok(self)
        } else {
            Err(SmtpError::Rejected {
                command,
                code: self.code,
                text: self.text,
            })
        }
    }
}

impl Connection {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    async fn command(&mut self, line: &str) -> Result<Reply, SmtpError> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    async fn expect(&mut self, what: &'static str, codes: &[u16]) -> Result<Reply, SmtpError> {
        self.reply().await?.require(what, codes)
    }

    /// One reply, possibly multi-line (`250-…` lines, then `250 …`).
    async fn reply(&mut self) -> Result<Reply, SmtpError> {
        let mut text = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            let mut line = Vec::new();
            let read = (&mut self.stream)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await?;
            if read == 0 {
                return Err(SmtpError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the mail server closed the connection",
                )));
            }
            if !line.ends_with(b"\n") {
                return Err(SmtpError::Protocol("a reply line is too long".into()));
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let (code, rest) = parse_reply_line(line)?;
            text.push(rest.get(1..).unwrap_or_default().to_owned());
            if !rest.starts_with('-') {
                return Ok(Reply {
                    code,
                    text: text.join(" "),
                });
            }
        }
        Err(SmtpError::Protocol("a reply has too many lines".into()))
    }
}

fn parse_reply_line(line: &str) -> Result<(u16, &str), SmtpError> {
    let malformed = || SmtpError::Protocol(format!("{:?}", line.chars().take(80).collect::<String>()));
    let digits = line.get(..3).ok_or_else(malformed)?;
    let code: u16 = digits.parse().map_err(|_| malformed())?;
    if !(200..600).contains(&code) {
        return Err(malformed());
    }
    let rest = &line[3..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('-')) {
        return Err(malformed());
    }
    Ok((code, rest))
}

/// A plain `local@domain` address: printable ASCII without the characters that would let it
/// escape the `<…>` of an SMTP command or a header. Internationalised addresses (SMTPUTF8)
/// are not supported.
#[must_use]
pub fn is_valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.is_empty()
        && address.len() <= 254
        && address.chars().all(|c| {
            c.is_ascii_graphic()
                && !matches!(
                    c,
                    '<' | '>' | '(' | ')' | ',' | ';' | ':' | '\\' | '"' | '[' | ']'
                )
        })
}

/// A header value in RFC 2047 encoded words when it is not short plain ASCII.
fn header_value(value: &str) -> String {
    let value: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if value.is_ascii() && value.len() <= 200 {
        return value;
    }
    // Each encoded word must stay within 75 characters: 45 bytes of UTF-8 become 60 of base64.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", BASE64.encode(&chunk)));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", BASE64.encode(&chunk)));
    }
    words.join("\r\n ")
}

/// The message as it goes after `DATA`: headers, then the body in base64 (UTF-8 text survives
/// any relay, 8BITMIME or not), with CRLF line ends.
#[must_use]
pub fn format_message(mail: &Mail, date: &str) -> String {
    let body = mail.body.replace("\r\n", "\n").replace('\n', "\r\n");
    let encoded = BASE64.encode(body.as_bytes());
    let mut out = String::with_capacity(encoded.len() + 512);
    out.push_str(&format!("From: {}\r\n", mail.from));
    out.push_str(&format!("To: {}\r\n", mail.to));
    out.push_str(&format!("Subject: {}\r\n", header_value(&mail.subject)));
    out.push_str(&format!("Date: {date}\r\n"));
    out.push_str(&format!("Message-ID: <{}>\r\n", mail.message_id));
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    out.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
    let bytes = encoded.as_bytes();
    for line in bytes.chunks(76) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// A line that starts with `.` gets another, so it cannot end the message early (RFC 5321
/// 4.5.2).
fn dot_stuffed(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(subject: &str, body: &str) -> Mail {
        Mail {
            from: "no-reply@mercato.local".into(),
            to: "ada@example.com".into(),
            subject: subject.into(),
            body: body.into(),
            message_id: "n-1@mercato.local".into(),
        }
    }

    #[test]
    fn reply_lines_are_parsed_and_garbage_is_refused() {
        assert_eq!(parse_reply_line("250 OK").unwrap(), (250, " OK"));
        assert_eq!(parse_reply_line("250-PIPELINING").unwrap(), (250, "-PIPELINING"));
        assert_eq!(parse_reply_line("354").unwrap(), (354, ""));
        for bad in ["", "25", "abc hello", "2500 x", "999 x", "HTTP/1.1 400"] {
            assert!(parse_reply_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_temporary_refusals_and_lost_connections_are_retried() {
        let rejected = |code| SmtpError::Rejected {
            command: "DATA",
            code,
            text: String::new(),
        };
        assert!(rejected(451).is_transient());
        assert!(!rejected(550).is_transient());
        assert!(SmtpError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!SmtpError::OutcomeUnknown("lost".into()).is_transient());
        assert!(!SmtpError::InvalidAddress("x".into()).is_transient());
    }

    #[test]
    fn addresses_that_could_inject_commands_or_headers_are_refused() {
        assert!(is_valid_address("ada@example.com"));
        assert!(is_valid_address("a.b+tag@sub.example.org"));
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example.com>\r\nRCPT TO:<x@y",
            "a da@example.com",
            "ada@exämple.com",
        ] {
            assert!(!is_valid_address(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_plain_subject_stays_readable_and_others_are_encoded_words() {
        let text = format_message(
            &mail("Your order o-1 is confirmed", "hi"),
            "Mon, 1 Jan 2024 00:00:00 +0000",
        );
        assert!(text.contains("\r\nSubject: Your order o-1 is confirmed\r\n"));
        let german = header_value("Ihre Bestellung o-1 ist bestätigt");
        assert!(german.starts_with("=?UTF-8?B?"), "{german}");
        let decoded: String = german
            .split("\r\n ")
            .map(|w| {
                let b64 = w.trim_start_matches("=?UTF-8?B?").trim_end_matches("?=");
                String::from_utf8(BASE64.decode(b64).unwrap()).unwrap()
            })
            .collect();
        assert_eq!(decoded, "Ihre Bestellung o-1 ist bestätigt");
        assert!(german.split("\r\n ").all(|w| w.len() <= 75));
        assert!(!header_value("a\r\nBcc: x@y").contains('\n'));
    }

    #[test]
    fn the_body_travels_as_base64_with_crlf_line_ends() {
        let text = format_message(&mail("s", "Hallo,\n\nschön.\n"), "d");
        let (headers, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(headers.contains("Content-Transfer-Encoding: base64"));
        assert!(headers.contains("Message-ID: <n-1@mercato.local>"));
        let joined: String = body.split("\r\n").collect();
        let decoded = String::from_utf8(BASE64.decode(joined).unwrap()).unwrap();
        assert_eq!(decoded, "Hallo,\r\n\r\nschön.\r\n");
        assert!(body.split("\r\n").all(|l| l.len() <= 76));
    }

    #[test]
    fn lines_starting_with_a_dot_are_stuffed() {
        assert_eq!(dot_stuffed("a\r\n.b\r\n..c\r\n"), "a\r\n..b\r\n...c\r\n");
    }

    #[test]
    fn the_defaults_are_valid_and_bad_settings_name_their_key() {
        assert_eq!(SmtpConfig::default().validate(), Ok(()));
        let bad = SmtpConfig {
            from: "not an address".into(),
            ..SmtpConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "from");
        let bad = SmtpConfig {
            max_attempts: 0,
            ..SmtpConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "max_attempts");
    }
}
