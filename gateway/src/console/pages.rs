//! The JSON each console page reads, and its actions. Reads from services go to their admin
//! endpoints with the signed-in admin's own token, so a service checks the role again itself.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use mercato_runtime::{Json, Problem};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Console;
use super::sampler::{self, Dependency, InstanceReport};
use super::session::{self, ConsoleAdmin, SignIn, audit};
use crate::admin::{self, Traffic};
use crate::config::RateClassConfig;
use crate::upstream::UpstreamView;

pub async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Result<Response, Problem> {
    session::sign_in(&console, &headers, body).await
}

pub async fn session(admin: ConsoleAdmin) -> Json<session::SessionView> {
    Json(session::current(&admin))
}

pub async fn sign_out(State(console): State<Console>, admin: ConsoleAdmin, headers: HeaderMap) -> Response {
    session::sign_out(&console, &admin, &headers).await
}

pub async fn refresh(State(console): State<Console>, headers: HeaderMap) -> Result<Response, Problem> {
    session::refresh(&console, &headers).await
}

pub async fn unknown() -> Problem {
    Problem::not_found("the console has no such call")
}

#[derive(Debug, Serialize)]
pub struct System {
    sample_interval_ms: u64,
    /// The gateway's view of each upstream: instances, health checks, per-instance breakers.
    upstreams: Vec<UpstreamView>,
    /// Every instance (the gateway's own included), its readiness and rates.
    instances: Vec<InstanceReport>,
    /// PostgreSQL, NATS, Redis (or SQLite and the embedded bus): each one's checks across
    /// the instances, from their readiness.
    dependencies: Vec<Dependency>,
}

pub async fn system(State(console): State<Console>, _: ConsoleAdmin) -> Json<System> {
    let instances = console.sampler.report();
    Json(System {
        sample_interval_ms: console.config.sample_interval_ms,
        upstreams: admin::views(&console.admin),
        dependencies: sampler::dependencies(&instances),
        instances,
    })
}

#[derive(Debug, Serialize)]
pub struct TrafficPage {
    upstreams: Vec<UpstreamView>,
    rate_limit_classes: BTreeMap<String, RateClassConfig>,
}

pub async fn traffic(State(console): State<Console>, _: ConsoleAdmin) -> Json<TrafficPage> {
    Json(TrafficPage {
        upstreams: admin::views(&console.admin),
        rate_limit_classes: (*console.rate_classes).clone(),
    })
}

/// `PUT /console/api/traffic/{name}`: the same change as the admin API's, audited.
pub async fn switch(
    State(console): State<Console>,
    Path(name): Path<String>,
    admin: ConsoleAdmin,
    Json(body): Json<Traffic>,
) -> Result<Json<UpstreamView>, Problem> {
    let wanted = body.describe();
    let result = admin::set_traffic(&console.admin, &name, &body).await;
    let outcome = match &result {
        Ok(view) => format!("ok: green {}%", view.green_percent),
        Err(problem) => format!("refused: {}", problem.status()),
    };
    audit(&admin.subject, &format!("traffic {wanted}"), &name, &outcome);
    result.map(Json)
}

/// A service's JSON answer, or the problem to pass on.
async fn json_of(response: reqwest::Response, what: &str) -> Result<Option<Value>, Problem> {
    match response.status().as_u16() {
        200 => response
            .json()
            .await
            .map(Some)
            .map_err(|_| Problem::unavailable(format!("{what} answered something unexpected"), 1)),
        404 => Ok(None),
        401 => Err(Problem::forbidden(format!("{what} refused the admin's token"))),
        // A service refuses by role or, under mutual TLS, by the caller's certificate: its
        // problem's detail says which.
        403 => {
            let detail = response
                .json::<Value>()
                .await
                .ok()
                .and_then(|problem| problem["detail"].as_str().map(str::to_owned));
            Err(Problem::forbidden(match detail {
                Some(detail) => format!("{what} refused the console: {detail}"),
                None => format!("{what} refused the console"),
            }))
        }
        status => Err(Problem::unavailable(format!("{what} answered {status}"), 1)),
    }
}

impl Console {
    async fn get_json(&self, upstream: &str, path: &str, token: &str) -> Result<Option<Value>, Problem> {
        let response = self
            .call_as(upstream, reqwest::Method::GET, path, |r| r.bearer_auth(token))
            .await?;
        json_of(response, upstream).await
    }

    /// Every instance of every upstream, for what each keeps of its own (spans, dead letters).
    fn every_instance(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .upstreams
            .all_instances()
            .into_iter()
            .map(|(name, i)| (name, i.url().trim_end_matches('/').to_owned()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// `GET path` on every instance; those that cannot answer are left out.
    async fn ask_every(&self, path: &str, token: &str) -> Vec<(String, Value)> {
        let asks = self.every_instance().into_iter().map(|(name, base)| async move {
            let response = self
                .clients
                .to(&name)
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            if !response.status().is_success() {
                return None;
            }
            Some((name, response.json::<Value>().await.ok()?))
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The spans of an order's traces from every instance's store, each span once, by start.
    async fn spans(&self, order_id: &str, token: &str) -> Vec<Value> {
        let mut spans: BTreeMap<String, Value> = BTreeMap::new();
        let path = format!(
            "{}?order_id={}",
            mercato_runtime::trace::endpoint::PATH,
            encode(order_id)
        );
        for (_, answer) in self.ask_every(&path, token).await {
            for span in answer["spans"].as_array().into_iter().flatten() {
                if let Some(id) = span["span_id"].as_str() {
                    spans.insert(id.to_owned(), span.clone());
                }
            }
        }
        let mut spans: Vec<Value> = spans.into_values().collect();
        spans.sort_by_key(|s| s["start_ns"].as_u64().unwrap_or(0));
        spans
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Find {
    email: String,
}

/// `GET /console/api/orders?email=…`: a customer's orders, found through identity's admin lookup.
pub async fn find_orders(
    State(console): State<Console>,
    admin: ConsoleAdmin,
    query: Result<Query<Find>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Ok(Query(find)) = query else {
        return Err(Problem::bad_request("give the customer's e-mail: ?email=…"));
    };
    let user = console
        .get_json(
            &console.config.identity_upstream,
            &format!("/admin/users?email={}", encode(&find.email)),
            &admin.token,
        )
        .await?
        .ok_or_else(|| Problem::not_found("no account has that e-mail"))?;
    let id = user["id"].as_str().unwrap_or_default();
    let orders = console
        .get_json(
            "orders",
            &format!("/admin/orders?customer_id={}", encode(id)),
            &admin.token,
        )
        .await?
        .unwrap_or_else(|| json!({"items": []}));
    Ok(Json(json!({"customer": user, "orders": orders["items"]})))
}

/// `GET /console/api/orders/{id}`: the order with its saga's events, payment, notifications
/// and trace.
pub async fn order(
    State(console): State<Console>,
    Path(id): Path<String>,
    admin: ConsoleAdmin,
) -> Result<Json<Value>, Problem> {
    let token = admin.token.as_str();
    let path = format!("/admin/orders/{}", encode(&id));
    let order = console
        .get_json("orders", &path, token)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no order {id}")))?;
    let payment = console
        .get_json("payments", &format!("/admin/payments/{}", encode(&id)), token)
        .await
        .unwrap_or(None);
    let events: Vec<String> = order["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["id"].as_str())
        .map(|e| format!("event_id={}", encode(e)))
        .collect();
    let notifications = if events.is_empty() {
        None
    } else {
        console
            .get_json(
                "notifications",
                &format!("/admin/notifications?{}", events.join("&")),
                token,
            )
            .await
            .unwrap_or(None)
    };
    let spans = console.spans(&id, token).await;
    Ok(Json(json!({
        "order": order["order"],
        "events": order["events"],
        "payment": payment,
        "notifications": notifications.map(|n| n["items"].clone()),
        "spans": spans,
    })))
}

/// `GET /console/api/messages`: every service's dead letters and its consumer groups' lag.
pub async fn messages(State(console): State<Console>, admin: ConsoleAdmin) -> Json<Value> {
    let mut letters = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (service, answer) in console.ask_every("/admin/dead-letters", &admin.token).await {
        for letter in answer["items"].as_array().into_iter().flatten() {
            let id = letter["id"].as_str().unwrap_or_default().to_owned();
            if seen.insert(id) {
                let mut letter = letter.clone();
                letter["service"] = json!(service);
                letters.push(letter);
            }
        }
    }
    let groups: Vec<Value> = console
        .sampler
        .report()
        .into_iter()
        .filter_map(|i| {
            let latest = i.latest?;
            Some(latest.consumer_lag.into_iter().map(move |(group, lag)| {
                json!({"service": i.upstream, "instance": i.url, "group": group, "lag": lag})
            }))
        })
        .flatten()
        .collect();
    Json(json!({"dead_letters": letters, "groups": groups}))
}

/// `POST /console/api/messages/{service}/{id}/replay`: the dead letter back to its group.
pub async fn replay(
    State(console): State<Console>,
    Path((service, id)): Path<(String, String)>,
    admin: ConsoleAdmin,
) -> Result<Response, Problem> {
    if console.upstreams.get(&service).is_none() {
        return Err(Problem::not_found(format!("no service {service:?}")));
    }
    let path = format!("/admin/dead-letters/{}/replay", encode(&id));
    let token = admin.token.clone();
    let answer = console.call(&service, &path, |r| r.bearer_auth(&token)).await?;
    let status = answer.status().as_u16();
    audit(
        &admin.subject,
        "replay dead letter",
        &format!("{service}/{id}"),
        &status.to_string(),
    );
    match status {
        200 | 204 => Ok(StatusCode::NO_CONTENT.into_response()),
        404 => Err(Problem::not_found(format!("no dead letter {id} at {service}"))),
        _ => Err(Problem::unavailable(format!("{service} answered {status}"), 1)),
    }
}

/// `GET /console/api/funnel`: orders placed, confirmed and cancelled per minute, from orders.
pub async fn funnel(State(console): State<Console>, admin: ConsoleAdmin) -> Result<Json<Value>, Problem> {
    let funnel = console
        .get_json("orders", "/admin/funnel?minutes=30", &admin.token)
        .await?
        .unwrap_or_else(|| json!({"minutes": []}));
    Ok(Json(funnel))
}
