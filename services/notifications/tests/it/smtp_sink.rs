//! A tiny real SMTP server for tests: it speaks enough of RFC 5321 (greeting, EHLO/HELO,
//! MAIL FROM, RCPT TO, DATA … ".", RSET, NOOP, QUIT) to take messages from the service, and
//! keeps them. It can be told to refuse messages with `451` (after the text, at SMTP's point of
//! no return), a number of times or always.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The text after `DATA`, dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl Received {
    /// A header's raw value (folded lines joined).
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = self.data.split_once("\r\n\r\n")?;
        let unfolded = headers.replace("\r\n ", " ");
        unfolded.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(": ")?;
            key.eq_ignore_ascii_case(name).then(|| value.to_owned())
        })
    }

    /// The subject, with RFC 2047 encoded words decoded.
    pub fn subject(&self) -> String {
        let raw = self.header("Subject").unwrap_or_default();
        if !raw.starts_with("=?UTF-8?B?") {
            return raw;
        }
        raw.split(' ')
            .map(|word| {
                let b64 = word.trim_start_matches("=?UTF-8?B?").trim_end_matches("?=");
                String::from_utf8(BASE64.decode(b64).expect("base64 word")).expect("UTF-8 word")
            })
            .collect()
    }

    /// The body, decoded from base64.
    pub fn body(&self) -> String {
        let (_, body) = self.data.split_once("\r\n\r\n").unwrap_or_default();
        let joined: String = body.split("\r\n").collect();
        String::from_utf8(BASE64.decode(joined).expect("base64 body")).expect("UTF-8 body")
    }
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    /// Messages whose text was complete, accepted or refused.
    attempts: usize,
    refuse_next: usize,
    refuse_always: bool,
}

/// The sink, listening on a loopback port until dropped.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("sink address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, Arc::clone(&shared)));
            }
        });
        Self { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses the next `n` messages with `451`.
    pub fn refuse_next(&self, n: usize) {
        self.state().refuse_next = n;
    }

    /// Refuses every message with `451` while `on`.
    pub fn refuse_always(&self, on: bool) {
        self.state().refuse_always = on;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    /// Messages whose text arrived complete, whether accepted or refused.
    pub fn attempts(&self) -> usize {
        self.state().attempts
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg.rfind('>').unwrap_or(arg.len());
    arg.get(start..end).unwrap_or_default().to_owned()
}

async fn session(stream: TcpStream, state: Arc<Mutex<State>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    if write.write_all(b"220 sink.test ESMTP ready\r\n").await.is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer: String = match verb.as_str() {
            "EHLO" => "250-sink.test\r\n250-8BITMIME\r\n250 SIZE 1048576\r\n".into(),
            "HELO" => "250 sink.test\r\n".into(),
            "MAIL" => {
                from = Some(address(&command));
                to.clear();
                "250 2.1.0 OK\r\n".into()
            }
            "RCPT" if from.is_some() => {
                to.push(address(&command));
                "250 2.1.5 OK\r\n".into()
            }
            "DATA" if from.is_some() && !to.is_empty() => {
                if write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut data = String::new();
                loop {
                    let mut text = String::new();
                    match lines.read_line(&mut text).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if text == ".\r\n" {
                        break;
                    }
                    data.push_str(text.strip_prefix('.').unwrap_or(&text));
                }
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                state.attempts += 1;
                let refuse = state.refuse_always || state.refuse_next > 0;
                state.refuse_next = state.refuse_next.saturating_sub(1);
                let answer = if refuse {
                    "451 4.3.0 try again later\r\n"
                } else {
                    state.received.push(Received {
                        from: from.take().unwrap_or_default(),
                        to: std::mem::take(&mut to),
                        data,
                    });
                    "250 2.0.0 queued\r\n"
                };
                from = None;
                to.clear();
                answer.into()
            }
            "RCPT" | "DATA" => "503 5.5.1 bad sequence of commands\r\n".into(),
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK\r\n".into()
            }
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                return;
            }
            _ => "502 5.5.2 command not implemented\r\n".into(),
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}
