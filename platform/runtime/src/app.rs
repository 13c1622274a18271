//! A built service: its server, the loops it runs beside it, and what to close when it stops.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::background::Background;
use crate::server::Server;

type Closer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service bound and ready to run.
#[derive(Debug)]
pub struct App {
    server: Server,
    background: Background,
    grace: Duration,
    closers: Closers,
}

/// What to close once everything else has stopped, in order.
#[derive(Default)]
struct Closers(Vec<Closer>);

impl std::fmt::Debug for Closers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} closers", self.0.len())
    }
}

impl App {
    /// `grace` bounds how long background tasks may take to stop after the server has.
    #[must_use]
    pub fn new(server: Server, background: Background, grace: Duration) -> Self {
        Self {
            server,
            background,
            grace,
            closers: Closers::default(),
        }
    }

    /// Runs `close` once everything else has stopped (closing a database pool, say).
    #[must_use]
    pub fn close_on_stop<F: Future<Output = ()> + Send + 'static>(mut self, close: F) -> Self {
        self.closers.0.push(Box::pin(close));
        self
    }

    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Where `/health` and `/ready` are served in plaintext beside a TLS port, if anywhere.
    #[must_use]
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.server.probe_addr()
    }

    /// Serves until `shutdown` is cancelled with the background tasks running; then stops the
    /// server (gracefully), the tasks, and runs the closers.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Self {
            server,
            background,
            grace,
            closers,
        } = self;
        let background = background.spawn(&shutdown);
        let result = server.run_until_stopped(shutdown).await;
        background.stop(grace).await;
        for close in closers.0 {
            close.await;
        }
        result
    }
}
