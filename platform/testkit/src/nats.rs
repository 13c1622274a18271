//! A private `nats-server` with JetStream for one test, on a free loopback port, that the test
//! can stop and start again (same port, same store) to play a broker outage.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

use crate::PATIENCE;

/// A `nats-server` child process, killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    log: PathBuf,
    /// A configuration file (users, permissions) and the environment it reads variables from.
    config: Option<(PathBuf, Vec<(String, String)>)>,
}

impl NatsServer {
    /// Starts a server whose JetStream store and log live under `dir`.
    ///
    /// # Panics
    /// When `nats-server` is not installed or does not become ready: a NATS suite fails, it
    /// never skips.
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, None).await
    }

    /// Starts a server that also reads `config` (for example an `authorization` block), whose
    /// `$VARIABLES` come from `env`. Port, store and log are still set here.
    ///
    /// # Panics
    /// As [`NatsServer::start`].
    pub async fn start_with_config(dir: &Path, config: &str, env: Vec<(String, String)>) -> Self {
        let file = dir.join("nats-server.conf");
        std::fs::write(&file, config).expect("write the nats-server configuration");
        Self::start_with(dir, Some((file, env))).await
    }

    async fn start_with(dir: &Path, config: Option<(PathBuf, Vec<(String, String)>)>) -> Self {
        let port = free_port();
        let mut server = Self {
            child: None,
            port,
            store: dir.join("jetstream"),
            log: dir.join("nats-server.log"),
            config,
        };
        server.restart().await;
        server
    }

    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// What the server logged so far (refusals such as permission violations are logged).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server again on the same port and store.
    ///
    /// # Panics
    /// When it is running already, or does not become ready.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let mut command = Command::new("nats-server");
        if let Some((file, env)) = &self.config {
            command.arg("-c").arg(file).envs(env.iter().map(|(k, v)| (k, v)));
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .arg("-l")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs `nats-server` on PATH (scripts/services.sh up installs it) and could not start it: {e}"
                )
            });
        self.child = Some(child);
        self.wait_until_ready().await;
    }

    /// Ready means the server greets a client with an INFO line that announces JetStream.
    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("nats-server exited with {status} before it was ready:\n{log}");
            }
            if self.greets_with_jetstream().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} was not ready within {PATIENCE:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn greets_with_jetstream(&self) -> bool {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", self.port));
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
            return false;
        };
        let mut greeting = vec![0_u8; 4096];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut greeting)).await {
            Ok(Ok(n)) => String::from_utf8_lossy(&greeting[..n]).contains("\"jetstream\":true"),
            _ => false,
        }
    }

    /// Stops the server the way an orderly shutdown does (SIGTERM), waiting until it has exited.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
