//! The gateway's own admin API, for operators and `mercato deploy`: the upstreams' instances,
//! health and traffic split. Every call needs a token with the `admin` role; these paths are
//! served by the gateway itself and never forwarded.
//!
//! | call | body → answer |
//! |---|---|
//! | `GET /admin/upstreams` | → every upstream's groups, instances and split |
//! | `GET /admin/upstreams/{name}` | → one upstream |
//! | `POST /admin/upstreams/{name}/instances` | `{url, group?}` → `201` the instance |
//! | `DELETE /admin/upstreams/{name}/instances?url=U` | → `204` |
//! | `PUT /admin/upstreams/{name}/traffic` | `{green_percent}` or `{live: "blue"\|"green"}` → the upstream |
//! | `POST /admin/upstreams/{name}/check` | `{group}` → readiness and smoke result per instance |
//!
//! With `[gateway.admin_state]` in a file or Redis, a change is read back from the store first
//! and written to it after, and every other gateway applies it within its sync interval; a
//! change that cannot be stored is answered `503` (see [`crate::upstream::shared`]).

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::StatusCode;
use http::request::Parts;
use mercato_runtime::{Json, Problem, auth};
use mercato_security::Verifier;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::upstream::health::{CheckResult, HealthChecker};
use crate::upstream::shared::StateStore;
use crate::upstream::{ChangeError, Group, UpstreamView, Upstreams};

/// The role every admin call needs.
pub const ADMIN_ROLE: &str = "admin";

/// What the admin calls share; the console makes its changes through the same functions.
#[derive(Clone)]
pub(crate) struct Admin {
    upstreams: Upstreams,
    verifier: Verifier,
    checker: HealthChecker,
    store: Arc<StateStore>,
}

impl Admin {
    pub(crate) fn new(
        upstreams: Upstreams,
        verifier: Verifier,
        checker: HealthChecker,
        store: Arc<StateStore>,
    ) -> Self {
        Self {
            upstreams,
            verifier,
            checker,
            store,
        }
    }

    pub(crate) fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }
}

/// The admin routes.
pub(crate) fn router(admin: Admin) -> Router {
    Router::new()
        .route("/admin/upstreams", get(list))
        .route("/admin/upstreams/{name}", get(show))
        .route("/admin/upstreams/{name}/instances", post(add).delete(remove))
        .route("/admin/upstreams/{name}/traffic", put(traffic))
        .route("/admin/upstreams/{name}/check", post(check))
        .with_state(admin)
}

/// A caller holding the admin role; extracted before any body, so that an anonymous caller
/// learns nothing from validation errors.
struct AdminCaller;

impl FromRequestParts<Admin> for AdminCaller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, admin: &Admin) -> Result<Self, Problem> {
        let claims = auth::authenticate(&admin.verifier, &parts.headers).await?;
        if claims.roles.iter().any(|r| r == ADMIN_ROLE) {
            Ok(Self)
        } else {
            Err(Problem::forbidden("the gateway's admin API needs the admin role"))
        }
    }
}

fn change_problem(error: &ChangeError) -> Problem {
    match error {
        ChangeError::InvalidUrl(_) => Problem::bad_request(error.to_string()),
        ChangeError::NotFound { .. } => Problem::not_found(error.to_string()),
        ChangeError::Exists { .. } | ChangeError::WouldEmpty { .. } => Problem::conflict(error.to_string()),
    }
}

/// Brings `name` up to date with the store, so a change builds on changes made elsewhere.
async fn refresh(admin: &Admin, name: &str) -> Result<(), Problem> {
    if admin.store.is_shared() {
        admin
            .store
            .sync(&admin.upstreams)
            .await
            .map_err(|e| unshared(name, &e))?;
    }
    Ok(())
}

/// Makes a change: brought up to date with the store first, stored after, and undone here when
/// it cannot be stored.
async fn change<T>(
    admin: &Admin,
    name: &str,
    make: impl FnOnce(&Upstreams) -> Result<T, ChangeError>,
) -> Result<T, Problem> {
    refresh(admin, name).await?;
    let before = admin.upstreams.state(name);
    let made = make(&admin.upstreams).map_err(|e| change_problem(&e))?;
    let (Some(before), Some(after)) = (before, admin.upstreams.state(name)) else {
        return Ok(made);
    };
    if let Err(error) = admin.store.save(name, &after).await {
        if let Err(undo) = admin.upstreams.apply(name, &before) {
            tracing::error!(upstream = name, %undo, "an unstored change could not be undone");
        }
        return Err(unshared(name, &error));
    }
    Ok(made)
}

fn unshared(name: &str, error: &crate::upstream::shared::StateError) -> Problem {
    tracing::warn!(upstream = name, %error, "admin state store unavailable");
    Problem::unavailable(
        "the change cannot be stored for every gateway right now; it was not made",
        1,
    )
}

fn unknown(name: &str) -> Problem {
    Problem::not_found(format!("no upstream is named {name:?}"))
}

/// Every upstream's view.
pub(crate) fn views(admin: &Admin) -> Vec<UpstreamView> {
    admin
        .upstreams
        .names()
        .filter_map(|n| admin.upstreams.get(n))
        .map(|u| admin.upstreams.view(u))
        .collect()
}

async fn list(State(admin): State<Admin>, _: AdminCaller) -> Result<Json<Vec<UpstreamView>>, Problem> {
    Ok(Json(views(&admin)))
}

async fn show(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    _: AdminCaller,
) -> Result<Json<UpstreamView>, Problem> {
    let upstream = admin.upstreams.get(&name).ok_or_else(|| unknown(&name))?;
    Ok(Json(admin.upstreams.view(upstream)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInstance {
    url: String,
    #[serde(default = "blue")]
    group: Group,
}

fn blue() -> Group {
    Group::Blue
}

async fn add(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    _: AdminCaller,
    Json(body): Json<NewInstance>,
) -> Result<Response, Problem> {
    let view = change(&admin, &name, |u| u.add(&name, body.group, &body.url)).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Debug, Deserialize)]
struct InstanceQuery {
    url: String,
}

async fn remove(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    _: AdminCaller,
    query: Result<Query<InstanceQuery>, QueryRejection>,
) -> Result<StatusCode, Problem> {
    let Ok(Query(query)) = query else {
        return Err(Problem::bad_request(
            "name the instance to remove: ?url=http://host:port",
        ));
    };
    change(&admin, &name, |u| u.remove(&name, &query.url)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Either the whole traffic to one group, or a split.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    live: Option<Group>,
    green_percent: Option<u8>,
}

impl Traffic {
    /// The change asked for, for the audit log.
    #[must_use]
    pub fn describe(&self) -> String {
        match (self.live, self.green_percent) {
            (Some(group), _) => format!("live {}", group.as_str()),
            (None, Some(p)) => format!("green {p}%"),
            (None, None) => "nothing".into(),
        }
    }
}

async fn traffic(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    _: AdminCaller,
    Json(body): Json<Traffic>,
) -> Result<Json<UpstreamView>, Problem> {
    set_traffic(&admin, &name, &body).await.map(Json)
}

/// Moves `name`'s traffic as `body` asks.
pub(crate) async fn set_traffic(admin: &Admin, name: &str, body: &Traffic) -> Result<UpstreamView, Problem> {
    let green_percent = match (body.live, body.green_percent) {
        (Some(Group::Blue), None) => 0,
        (Some(Group::Green), None) => 100,
        (None, Some(p)) if p <= 100 => p,
        (None, Some(_)) => {
            return Err(Problem::validation(vec![mercato_runtime::FieldError::new(
                "green_percent",
                "must be between 0 and 100",
            )]));
        }
        _ => return Err(Problem::bad_request("give exactly one of live and green_percent")),
    };
    change(admin, name, |u| u.set_split(name, green_percent)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    group: Group,
}

/// The verdict on a group before it gets traffic.
#[derive(Debug, Serialize)]
struct CheckReport {
    group: Group,
    ok: bool,
    instances: Vec<CheckResult>,
}

async fn check(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    _: AdminCaller,
    Json(body): Json<CheckRequest>,
) -> Result<Json<CheckReport>, Problem> {
    let upstream = admin.upstreams.get(&name).ok_or_else(|| unknown(&name))?;
    let instances = upstream.instances(body.group);
    let results = admin
        .checker
        .check_now(&name, &instances, upstream.smoke_path())
        .await;
    Ok(Json(CheckReport {
        group: body.group,
        ok: !results.is_empty() && results.iter().all(|r| r.error.is_none()),
        instances: results,
    }))
}
