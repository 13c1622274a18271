//! A blue/green switch as an operator runs it (`mercato deploy switch --to green`), through the
//! gateway's admin API:
//!
//! 1. the target group must have instances, each ready and answering the upstream's smoke path;
//! 2. all traffic moves to it in one atomic change; requests in flight finish on the old group,
//!    which keeps running, so no request fails because of the switch;
//! 3. for the watch window, the target group's failure rate is compared with the limit; once
//!    enough requests have been seen and it is over, the previous split is restored at once.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use crate::upstream::Group;

/// What to switch, and how to judge it.
#[derive(Debug, Clone)]
pub struct SwitchPlan {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`.
    pub gateway_url: String,
    /// A bearer token with the `admin` role.
    pub token: String,
    pub upstream: String,
    pub to: Group,
    /// How long the new group is watched after the switch.
    pub watch: Duration,
    /// How often its counters are read while watched.
    pub poll: Duration,
    /// The failure share (0.0–1.0) above which the switch is undone.
    pub max_error_rate: f64,
    /// No verdict on fewer requests than this.
    pub min_requests: u64,
}

impl SwitchPlan {
    /// A plan with the usual judgement: 30 s watch, read each second, undo above 5 % failures
    /// once 20 requests are in.
    #[must_use]
    pub fn new(gateway_url: &str, token: &str, upstream: &str, to: Group) -> Self {
        Self {
            gateway_url: gateway_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            upstream: upstream.to_owned(),
            to,
            watch: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            max_error_rate: 0.05,
            min_requests: 20,
        }
    }
}

/// How a switch that held ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchReport {
    /// Requests and failures on the new group during the watch.
    pub requests: u64,
    pub failures: u64,
}

/// Why a switch did not happen or did not hold.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the gateway's admin API cannot be reached: {0}")]
    Unreachable(String),
    #[error("the gateway refused {call}: {status} {detail}")]
    Refused {
        call: String,
        status: u16,
        detail: String,
    },
    #[error("the {group} group is not ready; nothing was switched: {reasons}")]
    NotReady { group: &'static str, reasons: String },
    #[error(
        "the {group} group failed {failures} of {requests} requests (over {limit_percent} %); traffic is back on the previous split"
    )]
    RolledBack {
        group: &'static str,
        requests: u64,
        failures: u64,
        limit_percent: f64,
    },
}

#[derive(Debug, Deserialize)]
struct GroupCounters {
    instances: Vec<serde_json::Value>,
    requests: u64,
    failures: u64,
}

#[derive(Debug, Deserialize)]
struct View {
    green_percent: u8,
    blue: GroupCounters,
    green: GroupCounters,
}

impl View {
    fn group(&self, group: Group) -> &GroupCounters {
        match group {
            Group::Blue => &self.blue,
            Group::Green => &self.green,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CheckReport {
    ok: bool,
    instances: Vec<CheckedInstance>,
}

#[derive(Debug, Deserialize)]
struct CheckedInstance {
    url: String,
    error: Option<String>,
}

struct AdminApi<'a> {
    http: reqwest::Client,
    plan: &'a SwitchPlan,
}

impl AdminApi<'_> {
    fn url(&self, tail: &str) -> String {
        format!(
            "{}/admin/upstreams/{}{tail}",
            self.plan.gateway_url, self.plan.upstream
        )
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        call: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, DeployError> {
        let response = request
            .bearer_auth(&self.plan.token)
            .send()
            .await
            .map_err(|e| DeployError::Unreachable(e.to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| DeployError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            let detail = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                .unwrap_or(body);
            return Err(DeployError::Refused {
                call: call.to_owned(),
                status: status.as_u16(),
                detail,
            });
        }
        serde_json::from_str(&body).map_err(|e| DeployError::Refused {
            call: call.to_owned(),
            status: status.as_u16(),
            detail: format!("unexpected answer: {e}"),
        })
    }

    async fn view(&self) -> Result<View, DeployError> {
        self.send("GET upstream", self.http.get(self.url(""))).await
    }

    async fn split(&self, green_percent: u8) -> Result<View, DeployError> {
        let body = json!({ "green_percent": green_percent });
        self.send("PUT traffic", self.http.put(self.url("/traffic")).json(&body))
            .await
    }
}

/// Runs `plan`; `progress` hears each step in a line.
///
/// # Errors
/// See [`DeployError`]; after [`DeployError::RolledBack`] the previous split is in place again.
pub async fn switch(plan: &SwitchPlan, progress: impl Fn(&str)) -> Result<SwitchReport, DeployError> {
    let api = AdminApi {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DeployError::Unreachable(e.to_string()))?,
        plan,
    };
    let group = plan.to.as_str();
    let before = api.view().await?;
    if before.group(plan.to).instances.is_empty() {
        return Err(DeployError::NotReady {
            group,
            reasons: "it has no instances".into(),
        });
    }
    progress(&format!("checking the {group} group of {}", plan.upstream));
    let report: CheckReport = api
        .send(
            "POST check",
            api.http
                .post(api.url("/check"))
                .json(&json!({ "group": plan.to })),
        )
        .await?;
    if !report.ok {
        let reasons = report
            .instances
            .iter()
            .filter_map(|i| i.error.as_ref().map(|e| format!("{}: {e}", i.url)))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(DeployError::NotReady { group, reasons });
    }
    let target = match plan.to {
        Group::Blue => 0,
        Group::Green => 100,
    };
    let switched = api.split(target).await?;
    let base = switched.group(plan.to);
    let (base_requests, base_failures) = (base.requests, base.failures);
    progress(&format!(
        "switched {} to {group} (was {} % green); watching for {} s",
        plan.upstream,
        before.green_percent,
        plan.watch.as_secs()
    ));
    let started = Instant::now();
    let last = loop {
        let remaining = plan.watch.saturating_sub(started.elapsed());
        tokio::time::sleep(plan.poll.min(remaining)).await;
        let now = api.view().await?;
        let counters = now.group(plan.to);
        let last = SwitchReport {
            requests: counters.requests.saturating_sub(base_requests),
            failures: counters.failures.saturating_sub(base_failures),
        };
        #[allow(clippy::cast_precision_loss)]
        let rate = last.failures as f64 / last.requests.max(1) as f64;
        if last.requests >= plan.min_requests && rate > plan.max_error_rate {
            api.split(before.green_percent).await?;
            progress(&format!(
                "{group} failed {} of {} requests: back to {} % green",
                last.failures, last.requests, before.green_percent
            ));
            return Err(DeployError::RolledBack {
                group,
                requests: last.requests,
                failures: last.failures,
                limit_percent: plan.max_error_rate * 100.0,
            });
        }
        if started.elapsed() >= plan.watch {
            break last;
        }
    };
    if last.requests < plan.min_requests {
        progress(&format!(
            "only {} requests reached {group} while watched: too few to judge",
            last.requests
        ));
    }
    Ok(last)
}
