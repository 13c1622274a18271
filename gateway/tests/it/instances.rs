//! Upstream instances a test can slow down, fail, make unready, kill and bring back, each a real
//! HTTP server on its own loopback port. A kill drops the listener and every open connection at
//! once, as a crashed process would; a restart listens on the same port again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt as _;

use crate::support::echo;

/// What an instance does with its requests; changed while it runs.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Every request except `/ready` and `/health` is answered with this status (0: echo).
    pub status: AtomicU16,
    /// `/ready` answers `503`.
    pub unready: AtomicBool,
    /// Milliseconds to wait before answering a proxied request.
    pub delay_ms: AtomicU64,
}

pub struct Instance {
    pub url: String,
    addr: SocketAddr,
    router: Router,
    pub behaviour: Arc<Behaviour>,
    hits: Arc<AtomicUsize>,
    server: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Clone)]
struct InstanceState {
    name: &'static str,
    behaviour: Arc<Behaviour>,
    hits: Arc<AtomicUsize>,
}

async fn handle(State(state): State<InstanceState>, request: Request) -> Response {
    let path = request.uri().path();
    if path == "/ready" {
        return if state.behaviour.unready.load(Ordering::SeqCst) {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            "ready".into_response()
        };
    }
    if path == "/health" {
        return "ok".into_response();
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = state.behaviour.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match state.behaviour.status.load(Ordering::SeqCst) {
        0 => echo(state.name, request).await,
        status => (StatusCode::from_u16(status).unwrap(), "instance failure").into_response(),
    }
}

fn listen(addr: SocketAddr) -> tokio::net::TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    // The port of a killed instance may still have connections in TIME_WAIT.
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

/// Accepts and serves until aborted; aborting drops every connection with it.
async fn accept_loop(listener: tokio::net::TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let router = router.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

impl Instance {
    /// A running instance answering as `name`.
    pub async fn start(name: &'static str) -> Self {
        let behaviour = Arc::new(Behaviour::default());
        let hits = Arc::new(AtomicUsize::new(0));
        let router = Router::new().fallback(handle).with_state(InstanceState {
            name,
            behaviour: Arc::clone(&behaviour),
            hits: Arc::clone(&hits),
        });
        let listener = listen("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(accept_loop(listener, router.clone()));
        Self {
            url: format!("http://{addr}"),
            addr,
            router,
            behaviour,
            hits,
            server: Mutex::new(Some(server)),
        }
    }

    /// Makes it wait `ms` before answering each proxied request.
    pub fn delay(&self, ms: u64) {
        self.behaviour.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Proxied requests that reached it (not its health endpoints).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every connection.
    pub async fn kill(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens on the same port again.
    pub fn restart(&self) {
        let listener = listen(self.addr);
        let server = tokio::spawn(accept_loop(listener, self.router.clone()));
        *self.server.lock().unwrap() = Some(server);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }
}
