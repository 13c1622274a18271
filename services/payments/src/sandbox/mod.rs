//! The payment sandbox: a Stripe-like provider that Mercato ships for development and fault
//! testing, served on its own port (`mercato serve payment-sandbox`).
//!
//! | `card_token`  | `POST /v1/charges` answers                                              |
//! |---------------|-------------------------------------------------------------------------|
//! | `tok_visa`    | `200` charge                                                            |
//! | `tok_decline` | `402 {"error": {"code": "card_declined"}}`                              |
//! | `tok_flaky`   | `503` for the first two attempts of each idempotency key, then `200`   |
//! | `tok_hang`    | nothing, until the client gives up (or the sandbox stops)               |
//! | `tok_late`    | charged at once, but the `200` comes only after `late_delay_ms`          |
//! | anything else | `400 invalid_card`                                                      |
//!
//! Every `POST` needs an `Idempotency-Key`: the same key with the same body answers with the
//! same charge (never a second one), with another body `409`. `POST /v1/refunds {charge_id}`
//! refunds a charge in full, once. `GET /v1/charges/{id}` shows a charge with its `refunded`
//! flag; `GET /v1/charges?idempotency_key=` lists the charges made with a key, so tests and
//! operators can check that nothing was charged twice. State lives in memory, bounded.

mod ledger;

use mercato_runtime::settings::{InvalidSetting, Validate, positive, section};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use mercato_runtime::{CancellationToken, HttpConfig, Readiness, Registry, Server, Service};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use ledger::{Card, Charge, ChargeDecision, ChargeRequest, Ledger, Refund, RefundDecision, Rules};

/// The sandbox's name on the wire, in logs and metrics.
pub const NAME: &str = "payment-sandbox";

/// The header every `POST` must carry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

const MAX_KEY_LEN: usize = 255;
const MAX_LIST: usize = 100;

/// How the sandbox runs (`[payment_sandbox]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    pub listen: SocketAddr,
    pub http: HttpConfig,
    /// How long `tok_late` takes to answer: longer than a checkout waits for its payment.
    pub late_delay_ms: u64,
    /// Attempts per idempotency key that `tok_flaky` answers `503`.
    pub flaky_failures: u32,
    /// Idempotency keys (with their charges) remembered; the oldest are forgotten first.
    pub capacity: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8190)),
            http: HttpConfig::default(),
            late_delay_ms: 8_000,
            flaky_failures: 2,
            capacity: 100_000,
        }
    }
}

impl Validate for SandboxConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        section("http", &self.http)?;
        positive(self.capacity as u64, "capacity")?;
        // The runtime answers 503 to a request that outlives its time limit, which would turn
        // the late card into a flaky one.
        if self.http.request_timeout_ms > 0 && self.late_delay_ms >= self.http.request_timeout_ms {
            return Err(InvalidSetting::new(
                "late_delay_ms",
                format!(
                    "must be shorter than http.request_timeout_ms ({})",
                    self.http.request_timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("payment sandbox setting {0}")]
    Config(#[from] InvalidSetting),
    #[error("payment sandbox cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone)]
struct Sandbox {
    ledger: Arc<Mutex<Ledger>>,
    /// Cancelled when the sandbox stops, releasing the requests it holds (hanging and late).
    stopping: CancellationToken,
    requests: Family<OutcomeLabels, Counter>,
}

impl Sandbox {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters to a test provider; keep serving.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, outcome: &'static str) {
        self.requests.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// A built sandbox, bound and ready to run.
#[derive(Debug)]
pub struct App {
    server: Server,
    stopping: CancellationToken,
}

/// Binds the listener and prepares the routes.
///
/// # Errors
/// An invalid setting, or the address cannot be bound.
pub async fn build(config: &SandboxConfig) -> Result<App, SandboxError> {
    config.validate()?;
    let mut registry = Registry::default();
    let requests = Family::<OutcomeLabels, Counter>::default();
    registry.register(
        "mercato_sandbox_charge_requests",
        "Charge requests the sandbox answered, by outcome",
        requests.clone(),
    );
    let stopping = CancellationToken::new();
    let state = Sandbox {
        ledger: Arc::new(Mutex::new(Ledger::new(Rules {
            capacity: config.capacity,
            flaky_failures: config.flaky_failures,
            late_delay: Duration::from_millis(config.late_delay_ms),
        }))),
        stopping: stopping.clone(),
        requests,
    };
    let service = Service {
        name: NAME,
        routes: router(state),
        readiness: Readiness::new(),
        registry,
        own_fallback: false,
    };
    let server = Server::bind(config.listen, &config.http, service)
        .await
        .map_err(|source| SandboxError::Bind {
            addr: config.listen,
            source,
        })?;
    Ok(App { server, stopping })
}

impl App {
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves until `shutdown` is cancelled; requests held open are answered `503` then.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Self { server, stopping } = self;
        let serve = server.run_until_stopped(shutdown.clone());
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => {
                stopping.cancel();
                return result;
            }
            () = shutdown.cancelled() => stopping.cancel(),
        }
        serve.await
    }
}

fn router(state: Sandbox) -> Router {
    Router::new()
        .route("/v1/charges", post(create_charge).get(list_charges))
        .route("/v1/charges/{id}", get(get_charge))
        .route("/v1/refunds", post(create_refund))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct ChargeBody {
    amount_minor: i64,
    currency: String,
    card_token: String,
}

#[derive(Debug, Deserialize)]
struct RefundBody {
    charge_id: String,
}

#[derive(Debug, Deserialize)]
struct ListParams {
    idempotency_key: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct ChargeView {
    id: String,
    object: &'static str,
    status: &'static str,
    amount_minor: i64,
    currency: String,
    refunded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_id: Option<String>,
    idempotency_key: String,
    created: i64,
}

impl ChargeView {
    fn of(charge: &Charge, now: Instant) -> Self {
        Self {
            id: charge.id.clone(),
            object: "charge",
            status: charge.status(now),
            amount_minor: charge.amount_minor,
            currency: charge.currency.clone(),
            refunded: charge.refund.is_some(),
            refund_id: charge.refund.as_ref().map(|r| r.id.clone()),
            idempotency_key: charge.idempotency_key.clone(),
            created: charge.created_at_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct RefundView {
    id: String,
    object: &'static str,
    status: &'static str,
    charge_id: String,
    amount_minor: i64,
    currency: String,
    created: i64,
}

impl From<Refund> for RefundView {
    fn from(r: Refund) -> Self {
        Self {
            id: r.id,
            object: "refund",
            status: "succeeded",
            charge_id: r.charge_id,
            amount_minor: r.amount_minor,
            currency: r.currency,
            created: r.created_at_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct ListView {
    object: &'static str,
    data: Vec<ChargeView>,
}

/// A Stripe-shaped error: `{"error": {"code": …, "message": …}}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, Response> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "send an Idempotency-Key header so that a retry never charges twice",
        ));
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Ok(key.to_owned()),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "the Idempotency-Key must be 1-255 visible ASCII characters",
        )),
    }
}

/// The idempotency key and the JSON body of a create request, the key checked first.
fn keyed_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(String, T), Response> {
    let key = idempotency_key(headers)?;
    let body = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("the body is not the expected JSON: {e}"),
        )
    })?;
    Ok((key, body))
}

async fn create_charge(State(sandbox): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let (key, body): (String, ChargeBody) = match keyed_request(&headers, &body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if body.amount_minor <= 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "amount_minor must be a positive number of minor units",
        );
    }
    if body.currency.len() != 3 || !body.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_currency",
            "currency must be an ISO 4217 code such as EUR",
        );
    }
    let request = ChargeRequest {
        amount_minor: body.amount_minor,
        currency: body.currency,
        card_token: body.card_token,
    };
    let now = Instant::now();
    let decision = sandbox
        .ledger()
        .charge(&key, request, now, mercato_storage::now_millis());
    match decision {
        ChargeDecision::Charged(charge) => {
            if charge.ready_at > now {
                tokio::select! {
                    () = tokio::time::sleep_until(charge.ready_at) => {}
                    () = sandbox.stopping.cancelled() => return stopping(),
                }
            }
            sandbox.count("succeeded");
            let current = sandbox.ledger().get(&charge.id).unwrap_or(charge);
            (
                StatusCode::OK,
                axum::Json(ChargeView::of(&current, Instant::now())),
            )
                .into_response()
        }
        ChargeDecision::Declined => {
            sandbox.count("declined");
            error(
                StatusCode::PAYMENT_REQUIRED,
                "card_declined",
                "the card was declined",
            )
        }
        ChargeDecision::Unavailable => {
            sandbox.count("unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the provider is briefly unavailable; retry with the same Idempotency-Key",
            )
        }
        ChargeDecision::Hang => {
            sandbox.count("hang");
            sandbox.stopping.cancelled().await;
            stopping()
        }
        ChargeDecision::InvalidCard => {
            sandbox.count("invalid_card");
            error(
                StatusCode::BAD_REQUEST,
                "invalid_card",
                "unknown card token; use tok_visa, tok_decline, tok_flaky, tok_hang or tok_late",
            )
        }
        ChargeDecision::KeyReused => {
            sandbox.count("key_reused");
            key_reused()
        }
    }
}

async fn create_refund(State(sandbox): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let (key, body): (String, RefundBody) = match keyed_request(&headers, &body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let decision = sandbox.ledger().refund(
        &key,
        &body.charge_id,
        Instant::now(),
        mercato_storage::now_millis(),
    );
    match decision {
        RefundDecision::Refunded(refund) => {
            (StatusCode::OK, axum::Json(RefundView::from(refund))).into_response()
        }
        RefundDecision::UnknownCharge => error(
            StatusCode::NOT_FOUND,
            "resource_missing",
            "there is no charge with this id",
        ),
        RefundDecision::NotCaptured => error(
            StatusCode::CONFLICT,
            "charge_not_captured",
            "the charge is still pending; refund it once it has succeeded",
        ),
        RefundDecision::KeyReused => key_reused(),
    }
}

async fn get_charge(State(sandbox): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sandbox.ledger().get(&id) {
        Some(charge) => axum::Json(ChargeView::of(&charge, Instant::now())).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "resource_missing",
            "there is no charge with this id",
        ),
    }
}

async fn list_charges(
    State(sandbox): State<Sandbox>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "use ?idempotency_key=…&limit=1..100",
        );
    };
    let limit = params.limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST);
    let now = Instant::now();
    let charges = {
        let ledger = sandbox.ledger();
        match &params.idempotency_key {
            Some(key) => ledger.by_key(key),
            None => ledger.recent(limit),
        }
    };
    axum::Json(ListView {
        object: "list",
        data: charges.iter().map(|c| ChargeView::of(c, now)).collect(),
    })
    .into_response()
}

fn key_reused() -> Response {
    error(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request body",
    )
}

fn stopping() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the sandbox is stopping",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(late_delay: Duration) -> Sandbox {
        Sandbox {
            ledger: Arc::new(Mutex::new(Ledger::new(Rules {
                capacity: 10,
                flaky_failures: 2,
                late_delay,
            }))),
            stopping: CancellationToken::new(),
            requests: Family::default(),
        }
    }

    fn headers(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, key.parse().unwrap());
        headers
    }

    fn body(card: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"amount_minor": 1999, "currency": "EUR", "card_token": "{card}"}}"#
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_card_answers_only_after_the_late_delay() {
        let sandbox = sandbox(Duration::from_secs(8));
        let start = Instant::now();
        let response = create_charge(State(sandbox.clone()), headers("k"), body("tok_late")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(start.elapsed() >= Duration::from_secs(8));
        let charges = sandbox.ledger().by_key("k");
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0].status(Instant::now()), "succeeded");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_of_a_late_charge_waits_for_the_same_charge() {
        let sandbox = sandbox(Duration::from_secs(8));
        let first = tokio::spawn(create_charge(
            State(sandbox.clone()),
            headers("k"),
            body("tok_late"),
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let start = Instant::now();
        let retry = create_charge(State(sandbox.clone()), headers("k"), body("tok_late")).await;
        assert_eq!(retry.status(), StatusCode::OK);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(5),
            "it waits for the rest of the delay"
        );
        assert_eq!(first.await.unwrap().status(), StatusCode::OK);
        assert_eq!(sandbox.ledger().by_key("k").len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_card_is_released_when_the_sandbox_stops() {
        let sandbox = sandbox(Duration::ZERO);
        let hanging = tokio::spawn(create_charge(
            State(sandbox.clone()),
            headers("k"),
            body("tok_hang"),
        ));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!hanging.is_finished(), "still no answer after an hour");
        sandbox.stopping.cancel();
        assert_eq!(hanging.await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_charge_without_an_idempotency_key_is_refused() {
        let response =
            create_charge(State(sandbox(Duration::ZERO)), HeaderMap::new(), body("tok_visa")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_late_delay_beyond_the_request_limit_is_refused() {
        let config = SandboxConfig {
            late_delay_ms: 40_000,
            ..SandboxConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "late_delay_ms");
        assert_eq!(SandboxConfig::default().validate(), Ok(()));
    }
}
