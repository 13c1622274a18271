use mercato_runtime::{HttpConfig, Readiness};
use mercato_testkit::ready::Readiness as Answer;
use serde_json::Value;

use crate::support::{Options, spawn_app, spawn_app_with};

/// What `/ready` answers on a service with `readiness`'s checks and `config`.
async fn ready_of(readiness: Readiness, config: HttpConfig) -> Answer {
    let app = spawn_app_with(Options {
        config,
        readiness,
        ..Options::default()
    })
    .await;
    let response = app.get("/ready").send().await.unwrap();
    assert_eq!(content_type(&response), "application/json");
    Answer::of(response).await
}

fn content_type(response: &reqwest::Response) -> &str {
    response.headers()["content-type"].to_str().unwrap()
}

#[tokio::test]
async fn health_answers_200_with_a_json_status() {
    let app = spawn_app().await;
    let response = app.get("/health").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn ready_answers_200_listing_every_check_when_all_pass() {
    let readiness = Readiness::new()
        .with_check("database", || async { Ok(()) })
        .with_check("broker", || async { Ok(()) });
    let ready = ready_of(readiness, HttpConfig::default()).await;

    assert_eq!(ready.status, 200);
    assert_eq!(ready.report["status"], "ready");
    assert_eq!(ready.checks().len(), 2);
    for name in ["database", "broker"] {
        let check = ready.check(name);
        assert_eq!(check["status"], "up");
        assert!(check["latency_ms"].is_u64());
        assert!(
            check.get("error").is_none(),
            "a passing check has no error: {check}"
        );
    }
}

#[tokio::test]
async fn ready_answers_200_when_there_are_no_checks() {
    let app = spawn_app().await;
    let response = app.get("/ready").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["status"], "ready");
    assert_eq!(report["checks"], serde_json::json!([]));
}

#[tokio::test]
async fn ready_answers_503_with_the_reason_of_a_failing_check() {
    let readiness = Readiness::new()
        .with_check("database", || async { Err("connection refused".to_owned()) })
        .with_check("broker", || async { Ok(()) });
    let ready = ready_of(readiness, HttpConfig::default()).await;

    assert_eq!(ready.down("database")["error"], "connection refused");
    assert_eq!(ready.check("broker")["status"], "up");
}

#[tokio::test]
async fn ready_answers_503_timed_out_for_a_check_that_never_completes() {
    let readiness = Readiness::new()
        .with_check("hung", std::future::pending)
        .with_check("database", || async { Ok(()) });
    let config = HttpConfig {
        readiness_check_timeout_ms: 200,
        ..HttpConfig::default()
    };
    // A hung check that held the probe would leave no answer; the answer names the check's
    // own timeout as the reason it is down.
    let ready = ready_of(readiness, config).await;

    assert_eq!(ready.down("hung")["error"], "timed out after 200 ms");
    assert_eq!(ready.check("database")["status"], "up");
}
