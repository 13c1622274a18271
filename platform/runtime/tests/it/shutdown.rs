use std::io::ErrorKind;
use std::time::{Duration, Instant};

use mercato_runtime::HttpConfig;
use mercato_testkit::{eventually, joined};
use serde_json::Value;

use crate::support::{Options, PATIENCE, TestApp, spawn_app_with};

fn with_config(config: HttpConfig) -> Options {
    Options {
        config,
        ..Options::default()
    }
}

/// Waits for the server task to end and returns what `run_until_stopped` returned.
async fn stopped(app: TestApp) -> std::io::Result<()> {
    joined("run_until_stopped to return", app.stopped).await
}

async fn assert_connection_refused(addr: std::net::SocketAddr) {
    let error = tokio::net::TcpStream::connect(addr)
        .await
        .expect_err("the listener is closed");
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{error}");
}

#[tokio::test]
async fn shutdown_reports_stopping_then_lets_in_flight_requests_finish_and_refuses_new_connections() {
    let app = spawn_app_with(with_config(HttpConfig {
        drain_delay_ms: 500,
        ..HttpConfig::default()
    }))
    .await;
    let ready = app.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let in_flight = tokio::spawn(app.get("/slow").send());
    app.slow_request_started().await;
    app.shutdown.cancel();

    eventually(PATIENCE, "/ready to report stopping", || async {
        let response = app.get("/ready").send().await.ok()?;
        if response.status() != 503 {
            return None;
        }
        let report: Value = response.json().await.ok()?;
        (report["status"] == "stopping").then_some(())
    })
    .await;
    assert!(
        !app.stopped.is_finished(),
        "the server waits for the in-flight request"
    );

    app.gates.release.notify_one();
    let response = joined("the in-flight request to complete", in_flight)
        .await
        .expect("the in-flight request is answered, not cut off");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");

    let addr = app.addr;
    stopped(app).await.expect("a clean shutdown");
    assert_connection_refused(addr).await;
}

#[tokio::test]
async fn shutdown_without_requests_in_flight_stops_promptly_and_refuses_new_connections() {
    let app = spawn_app_with(Options::default()).await;
    assert_eq!(app.get("/health").send().await.unwrap().status(), 200);

    app.shutdown.cancel();
    let addr = app.addr;
    stopped(app).await.expect("a clean shutdown");
    assert_connection_refused(addr).await;
}

#[tokio::test]
async fn shutdown_stops_waiting_for_a_request_still_running_after_the_grace_period() {
    let app = spawn_app_with(with_config(HttpConfig {
        request_timeout_ms: 0,
        shutdown_grace_ms: 200,
        ..HttpConfig::default()
    }))
    .await;
    let _stuck = tokio::spawn(app.get("/slow").send());
    app.slow_request_started().await;

    let start = Instant::now();
    app.shutdown.cancel();
    let addr = app.addr;
    stopped(app)
        .await
        .expect("giving up on a stuck request is not an error");
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "the stuck request had its grace period"
    );
    assert_connection_refused(addr).await;
}
