//! Redis for tests: a key namespace for one test on the shared server, emptied when the test
//! ends, and a private server a test can stop and start again.

use redis::Commands as _;

/// The Redis the suites use: `MERCATO_TEST_REDIS_URL`, else the local default.
#[must_use]
pub fn url() -> String {
    std::env::var("MERCATO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique key prefix (`test:<uuid>:`); every key under it is deleted on drop, so tests share one
/// Redis in parallel and leave nothing behind.
#[derive(Debug)]
pub struct KeyPrefix {
    url: String,
    prefix: String,
}

impl KeyPrefix {
    #[must_use]
    pub fn new() -> Self {
        Self {
            url: url(),
            prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.prefix
    }

    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeyPrefix {
    fn drop(&mut self) {
        // Blocking on purpose: drop cannot await, and a test's end is no hot path. A Redis that
        // is gone already has nothing to clean.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(std::time::Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = match connection.scan_match(&pattern) {
            Ok(iter) => iter.collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query(&mut connection);
        }
    }
}

/// A private `redis-server` for one test, on a free loopback port, without persistence, that the
/// test can stop and start again on the same port to play a Redis outage. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<std::process::Child>,
    port: u16,
}

impl RedisServer {
    /// # Panics
    /// When `redis-server` is not installed or does not answer: a Redis suite fails, it never
    /// skips.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self { child: None, port };
        server.restart().await;
        server
    }

    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on its port.
    ///
    /// # Panics
    /// When it is running already, or does not answer `PING` in time.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs `redis-server` on PATH (scripts/services.sh up installs it) and could not start it: {e}"
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.answers().await {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {} did not answer in time",
                self.port
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn answers(&self) -> bool {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", self.port));
        let Ok(Ok(mut stream)) = tokio::time::timeout(std::time::Duration::from_secs(1), connect).await
        else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut answer = [0_u8; 16];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(1), stream.read(&mut answer)).await,
            Ok(Ok(n)) if answer[..n].starts_with(b"+PONG")
        )
    }

    /// Kills the server, as a crash or an outage would, and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
