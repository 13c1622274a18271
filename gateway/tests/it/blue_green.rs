//! Blue/green switches through the admin API and [`mercato_gateway::deploy::switch`], under a
//! steady load of real requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mercato_gateway::deploy::{self, DeployError, SwitchPlan};
use mercato_gateway::{Group, UpstreamSettings};
use reqwest::Method;
use serde_json::{Value, json};

use crate::instances::Instance;
use crate::support::{PATIENCE, TestGateway, echoed, expect_problem_of, spawn_gateway_with};

async fn blue_green(blue: &Instance, green: &Instance) -> TestGateway {
    let (blue, green) = (blue.url.clone(), green.url.clone());
    spawn_gateway_with(move |config| {
        config.gateway.rate_limit.enabled = false;
        config.gateway.upstreams.insert(
            "echo".into(),
            UpstreamSettings {
                blue: vec![blue],
                green: vec![green],
                ..UpstreamSettings::default()
            },
        );
    })
    .await
}

fn plan(gateway: &TestGateway, to: Group) -> SwitchPlan {
    SwitchPlan {
        watch: Duration::from_millis(1_500),
        poll: Duration::from_millis(100),
        min_requests: 10,
        ..SwitchPlan::new(&gateway.url(""), &gateway.token("ops", &["admin"]), "echo", to)
    }
}

/// Runs `mercato deploy switch`'s procedure towards green on `gateway`'s `echo` upstream.
async fn to_green(gateway: &TestGateway) -> Result<deploy::SwitchReport, DeployError> {
    deploy::switch(&plan(gateway, Group::Green), |_| {}).await
}

/// The last twenty answers of a load all came from `group`.
fn assert_last_answers_from(answers: &[Result<String, String>], group: &str, what: &str) {
    let tail = &answers[answers.len() - 20..];
    assert!(tail.iter().all(|a| a.as_deref() == Ok(group)), "{what}: {tail:?}");
}

/// Steady GETs from four loops; records which instance answered and every failure.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<std::sync::Mutex<Vec<Result<String, String>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gateway: &TestGateway) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..4)
            .map(|_| {
                let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
                let (http, url) = (gateway.http.clone(), gateway.url("/api/echo/items"));
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let answer = match http.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                let seen: Value = r.json().await.unwrap();
                                Ok(seen["upstream"].as_str().unwrap().to_owned())
                            }
                            Ok(r) => Err(r.status().to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        answers.lock().unwrap().push(answer);
                    }
                })
            })
            .collect();
        Self { stop, answers, tasks }
    }

    fn count(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    async fn finish(self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.answers).unwrap().into_inner().unwrap()
    }
}

async fn some_traffic(load: &Load) {
    let start = load.count();
    mercato_testkit::eventually(PATIENCE, "load to flow", || {
        let now = load.count();
        async move { (now >= start + 20).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_switch_under_steady_load_fails_no_request() {
    let (blue, green) = (Instance::start("blue").await, Instance::start("green").await);
    let gateway = blue_green(&blue, &green).await;
    let load = Load::start(&gateway);
    some_traffic(&load).await;

    let report = to_green(&gateway).await.unwrap();
    assert!(report.requests >= 10, "{report:?}");
    assert_eq!(report.failures, 0);
    some_traffic(&load).await;
    let answers = load.finish().await;

    let failures: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failures.is_empty(), "{failures:?}");
    let first_green = answers.iter().position(|a| a.as_deref() == Ok("green")).unwrap();
    assert!(answers[..first_green].iter().all(|a| a.as_deref() == Ok("blue")));
    assert_last_answers_from(&answers, "green", "all traffic is on green");
}

#[tokio::test]
async fn a_green_that_fails_real_traffic_is_rolled_back_on_its_own() {
    let (blue, green) = (Instance::start("blue").await, Instance::start("green").await);
    // Ready and passing the smoke check, but failing the requests that matter.
    green.behaviour.status.store(500, Ordering::SeqCst);
    let gateway = blue_green(&blue, &green).await;
    let load = Load::start(&gateway);
    some_traffic(&load).await;

    let error = to_green(&gateway).await.unwrap_err();
    assert!(
        matches!(error, DeployError::RolledBack { group: "green", .. }),
        "{error}"
    );
    let view = gateway.upstream_view("echo").await;
    assert_eq!(view["green_percent"], 0, "{view}");
    assert_eq!(view["live"], "blue");
    some_traffic(&load).await;
    let answers = load.finish().await;
    assert_last_answers_from(&answers, "blue", "back on blue");
}

#[tokio::test]
async fn a_green_that_is_not_ready_is_never_switched_to() {
    let (blue, green) = (Instance::start("blue").await, Instance::start("green").await);
    green.behaviour.unready.store(true, Ordering::SeqCst);
    let gateway = blue_green(&blue, &green).await;

    let error = to_green(&gateway).await.unwrap_err();
    assert!(
        matches!(error, DeployError::NotReady { group: "green", .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&green.url), "{error}");
    for _ in 0..5 {
        let seen = echoed(gateway.get("/api/echo/x").send().await.unwrap()).await;
        assert_eq!(seen["upstream"], "blue");
    }
}

#[tokio::test]
async fn a_weight_split_sends_a_share_to_green() {
    let (blue, green) = (Instance::start("blue").await, Instance::start("green").await);
    let gateway = blue_green(&blue, &green).await;
    let traffic = "/admin/upstreams/echo/traffic";
    let split = gateway
        .admin_json(Method::PUT, traffic, &json!({ "green_percent": 25 }))
        .await;
    assert_eq!(split.status(), 200);
    gateway.expect_ok("/api/echo/x", 400).await;
    let green_share = green.hits();
    assert!(
        (50..=150).contains(&green_share),
        "{green_share} of 400 went to green"
    );
    assert_eq!(blue.hits() + green_share, 400);

    for body in [
        json!({ "green_percent": 101 }),
        json!({ "live": "green", "green_percent": 5 }),
        json!({}),
    ] {
        let refused = gateway.admin_json(Method::PUT, traffic, &body).await;
        assert!(matches!(refused.status().as_u16(), 400 | 422), "{body}");
    }
    let anonymous = gateway
        .http
        .put(gateway.url(traffic))
        .json(&json!({ "live": "green" }))
        .send()
        .await
        .unwrap();
    expect_problem_of(anonymous, 401, "unauthorized").await;
}
