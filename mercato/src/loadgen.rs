//! `mercato loadgen`: checkout load at a constant arrival rate, through the public API.
//!
//! Setup registers customers (and, with admin credentials, tops up stock). Then an order is
//! started every `1/rate` seconds whatever happened to the previous ones (an open model, so a
//! slow system shows as latency rather than as a lower offered rate). Each order is followed with
//! the long poll of `GET /api/orders/{id}` (`wait_for_change_from=pending`), one request per
//! change instead of one per poll interval, until it is confirmed or cancelled. One HTTP client
//! (a pool of kept-alive connections) serves every order.
//!
//! The report gives the offered and achieved rates, the latency from `POST /api/orders` to
//! reading `confirmed`, the saga's phases from the server's own times (placed → reserved →
//! paid → confirmed), refusals by the backlog bound (`503`) and by the rate limit (`429`) apart
//! from errors, and the load generator's own CPU time.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Semaphore;

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Orders started per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long to keep starting orders, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Customers to spread the orders over.
    #[arg(long, default_value_t = 20)]
    pub customers: usize,
    /// The card every order pays with.
    #[arg(long, default_value = "tok_visa")]
    pub card: String,
    /// An admin account used to raise stock before the run (password in MERCATO_ADMIN_PASSWORD).
    #[arg(long)]
    pub admin_email: Option<String>,
    /// The admin's password; read from MERCATO_ADMIN_PASSWORD, never from the command line.
    #[arg(skip)]
    pub admin_password: Option<String>,
    /// Most orders in flight at once; beyond it new orders wait (and the report says so).
    #[arg(long, default_value_t = 2048)]
    pub max_in_flight: usize,
    /// How long one order may take to reach an end state before it counts as stuck.
    #[arg(long, default_value_t = 60)]
    pub order_timeout_secs: u64,
    /// How long one long poll may wait for the order to change, in milliseconds; through the
    /// gateway, below its slow-call threshold (10 s), so that waiting is not taken for slowness.
    #[arg(long, default_value_t = 5_000)]
    pub wait_ms: u64,
}

/// Durations of one kind, for percentiles.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`th percentile (nearest rank), zero when empty.
    #[must_use]
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let Some(last) = sorted.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((p / 100.0) * last as f64).round() as usize;
        sorted[rank.min(last)]
    }
}

/// The saga's phases of confirmed orders, from the server's times.
#[derive(Debug, Default, Clone)]
pub struct Phases {
    /// Placed → stock reserved (inventory's round trip over the bus).
    pub reserve: Samples,
    /// Reserved → payment captured (payments' round trip and the provider).
    pub charge: Samples,
    /// Captured → confirmed.
    pub confirm: Samples,
    /// Placed → confirmed.
    pub total: Samples,
}

/// What a run measured.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Orders started.
    pub offered: usize,
    /// How long starting them took.
    pub offered_for: Duration,
    /// From the first start until the last order ended.
    pub elapsed: Duration,
    /// `POST /api/orders` → reading `confirmed`, per confirmed order.
    pub confirmed: Samples,
    pub phases: Phases,
    pub cancelled: usize,
    /// Refused with `503` by orders because its backlog was full (`backlog-full`).
    pub shed: usize,
    /// Other `503`s: the gateway's breaker or bulkhead, a failing upstream.
    pub unavailable: usize,
    /// Refused with `429` by the gateway's rate limit.
    pub rate_limited: usize,
    /// Long polls answered `429`; their orders were followed again after `Retry-After`.
    pub rate_limited_polls: usize,
    /// Refused with another `4xx`.
    pub rejected: usize,
    /// Transport failures and `5xx` other than `503`.
    pub errors: usize,
    /// Not ended within `order_timeout_secs`.
    pub stuck: usize,
    /// Orders that waited to start because `max_in_flight` were in flight.
    pub delayed_starts: usize,
    /// The load generator's own CPU time (user + system) while it ran, where the OS tells.
    pub cpu: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Confirmed(Duration, Option<[Duration; 4]>),
    Cancelled,
    Shed,
    Unavailable,
    RateLimited,
    Rejected,
    Error,
    Stuck,
}

impl Report {
    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Confirmed(latency, phases) => {
                self.confirmed.push(latency);
                if let Some([reserve, charge, confirm, total]) = phases {
                    self.phases.reserve.push(reserve);
                    self.phases.charge.push(charge);
                    self.phases.confirm.push(confirm);
                    self.phases.total.push(total);
                }
            }
            Outcome::Cancelled => self.cancelled += 1,
            Outcome::Shed => self.shed += 1,
            Outcome::Unavailable => self.unavailable += 1,
            Outcome::RateLimited => self.rate_limited += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Error => self.errors += 1,
            Outcome::Stuck => self.stuck += 1,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::cast_precision_loss)]
fn per_second(count: usize, over: Duration) -> f64 {
    count as f64 / over.as_secs_f64().max(f64::EPSILON)
}

fn percentiles(f: &mut fmt::Formatter<'_>, label: &str, samples: &Samples) -> fmt::Result {
    writeln!(
        f,
        "{label:<22}p50 {:.1} ms   p90 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        ms(samples.percentile(50.0)),
        ms(samples.percentile(90.0)),
        ms(samples.percentile(99.0)),
        ms(samples.percentile(100.0)),
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "offered rate          {:.1} orders/s ({} orders)",
            per_second(self.offered, self.offered_for),
            self.offered
        )?;
        writeln!(
            f,
            "confirmed             {} ({:.1} orders/s over {:.1} s)",
            self.confirmed.len(),
            per_second(self.confirmed.len(), self.elapsed),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "cancelled             {}", self.cancelled)?;
        writeln!(
            f,
            "refused, 503          {} past the backlog bound; {} other (the gateway's breaker or \
             bulkhead, a failing upstream)",
            self.shed, self.unavailable
        )?;
        if self.rate_limited + self.rate_limited_polls > 0 {
            writeln!(
                f,
                "RATE LIMITED, 429     {} orders refused, {} long polls delayed: the gateway's rate \
                 limit throttled this run (more --customers, or [gateway.rate_limit])",
                self.rate_limited, self.rate_limited_polls
            )?;
        } else {
            writeln!(f, "rate limited, 429     none")?;
        }
        writeln!(f, "refused, other 4xx    {}", self.rejected)?;
        writeln!(f, "errors                {}", self.errors)?;
        writeln!(f, "stuck                 {}", self.stuck)?;
        writeln!(f, "delayed starts        {}", self.delayed_starts)?;
        percentiles(f, "POST → confirmed", &self.confirmed)?;
        writeln!(f, "saga phases, from the server's times:")?;
        percentiles(f, "  reserve", &self.phases.reserve)?;
        percentiles(f, "  charge", &self.phases.charge)?;
        percentiles(f, "  confirm", &self.phases.confirm)?;
        percentiles(f, "  placed → confirmed", &self.phases.total)?;
        match self.cpu {
            Some(cpu) => {
                #[allow(clippy::cast_precision_loss)]
                let per_order = ms(cpu) / self.offered.max(1) as f64;
                writeln!(
                    f,
                    "loadgen CPU           {:.2} s over {:.1} s ({:.1} % of one core; {:.3} ms per order)",
                    cpu.as_secs_f64(),
                    self.elapsed.as_secs_f64(),
                    100.0 * cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(f64::EPSILON),
                    per_order
                )
            }
            None => writeln!(f, "loadgen CPU           unknown on this system"),
        }
    }
}

/// This process's CPU time so far (user + system), from `/proc/self/stat` (Linux).
fn cpu_time() -> Option<Duration> {
    // USER_HZ, the unit of /proc's times, is 100 on every Linux architecture.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SECOND))
}

async fn json_of(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// A password-grant access token from identity, through the gateway at `target`.
pub(crate) async fn token(
    http: &reqwest::Client,
    target: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let response = http
        .post(format!("{target}/api/identity/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", password),
        ])
        .send()
        .await?;
    let body = json_of(response).await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in the token answer")
}

async fn customer(http: &reqwest::Client, target: &str, run: &str, n: usize) -> anyhow::Result<String> {
    let email = format!("loadgen-{run}-{n}@example.com");
    let password = "loadgen password";
    let response = http
        .post(format!("{target}/api/identity/register"))
        .json(&json!({"email": email, "password": password, "name": format!("Load {n}")}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("register {email}: {}", response.status());
    }
    let token = token(http, target, &email, password).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{target}/api/customers/me"))
        .bearer_auth(&token)
        .send()
        .await?
        .status()
        != 200
    {
        if Instant::now() > deadline {
            bail!("no customer profile for {email} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(token)
}

/// The saga's phases from the order's `timeline`: reserve, charge, confirm, and the whole.
fn phases(order: &Value) -> Option<[Duration; 4]> {
    let at = |phase: &str| {
        let text = order["timeline"][phase].as_str()?;
        OffsetDateTime::parse(text, &Rfc3339).ok()
    };
    let (placed, reserved, paid, confirmed) = (
        at("placed_at")?,
        at("reserved_at")?,
        at("paid_at")?,
        at("confirmed_at")?,
    );
    let span = |from: OffsetDateTime, to: OffsetDateTime| Duration::try_from(to - from).unwrap_or_default();
    Some([
        span(placed, reserved),
        span(reserved, paid),
        span(paid, confirmed),
        span(placed, confirmed),
    ])
}

/// `Retry-After` in whole seconds, at least one.
fn retry_after(response: &reqwest::Response) -> Duration {
    let secs = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.max(1))
}

/// The problem type of orders' refusal past its backlog bound.
const BACKLOG_FULL: &str = "urn:mercato:problem:backlog-full";

/// Everything the orders share.
struct Shared {
    http: reqwest::Client,
    args: LoadgenArgs,
    report: Mutex<Report>,
}

impl Shared {
    fn record(&self, outcome: Outcome) {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(outcome);
    }

    fn poll_limited(&self) {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rate_limited_polls += 1;
    }
}

/// One order: place it and follow it with long polls until it ends.
async fn one_order(shared: &Shared, token: &str, sku: &str) -> Outcome {
    let args = &shared.args;
    let started = Instant::now();
    let body = json!({
        "items": [{"sku": sku, "quantity": 1}],
        "payment": {"card_token": args.card},
        "shipping_address": {"line1": "1 Load St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    });
    let placed = shared
        .http
        .post(format!("{}/api/orders", args.target))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await;
    let id = match placed {
        Ok(r) if r.status() == StatusCode::CREATED => match r.json::<Value>().await {
            Ok(v) => v["id"].as_str().unwrap_or_default().to_owned(),
            Err(_) => return Outcome::Error,
        },
        Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
            let problem = r.json::<Value>().await.unwrap_or_default();
            return if problem["type"] == BACKLOG_FULL {
                Outcome::Shed
            } else {
                Outcome::Unavailable
            };
        }
        Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => return Outcome::RateLimited,
        Ok(r) if r.status().is_client_error() => return Outcome::Rejected,
        _ => return Outcome::Error,
    };
    let deadline = started + Duration::from_secs(args.order_timeout_secs);
    let url = format!(
        "{}/api/orders/{id}?wait_for_change_from=pending&wait_ms={}",
        args.target, args.wait_ms
    );
    while Instant::now() < deadline {
        let pause = match shared.http.get(&url).bearer_auth(token).send().await {
            Ok(r) if r.status() == StatusCode::OK => {
                let order = r.json::<Value>().await.unwrap_or_default();
                match order["status"].as_str() {
                    Some("confirmed") => return Outcome::Confirmed(started.elapsed(), phases(&order)),
                    Some("cancelled") => return Outcome::Cancelled,
                    _ => None,
                }
            }
            Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => {
                shared.poll_limited();
                Some(retry_after(&r))
            }
            // A failed poll says nothing about the order; look again shortly.
            _ => Some(Duration::from_millis(100)),
        };
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    Outcome::Stuck
}

/// Runs the load and prints the report.
///
/// # Errors
/// See [`measure`].
pub async fn run(mut args: LoadgenArgs) -> anyhow::Result<()> {
    if args.admin_email.is_some() && args.admin_password.is_none() {
        args.admin_password = Some(
            std::env::var("MERCATO_ADMIN_PASSWORD")
                .context("set MERCATO_ADMIN_PASSWORD for --admin-email")?,
        );
    }
    let report = measure(args).await?;
    crate::say!("{report}");
    Ok(())
}

/// Runs the load and returns what it measured.
///
/// # Errors
/// Bad arguments, or the setup failed (the system is not reachable, registration failed).
pub async fn measure(args: LoadgenArgs) -> anyhow::Result<Report> {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be between 0 and 10000 orders per second");
    }
    if args.wait_ms > 30_000 {
        bail!("--wait-ms must be at most 30000");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.wait_ms) + Duration::from_secs(30))
        .pool_max_idle_per_host(args.max_in_flight)
        .build()?;
    let target = args.target.trim_end_matches('/').to_owned();
    let args = LoadgenArgs {
        target: target.clone(),
        ..args
    };

    let products = json_of(
        http.get(format!("{target}/api/products?page_size=100"))
            .send()
            .await?,
    )
    .await?;
    let skus: Vec<String> = products["items"]
        .as_array()
        .context("no products")?
        .iter()
        .filter_map(|p| p["sku"].as_str().map(str::to_owned))
        .collect();
    if skus.is_empty() {
        bail!("the catalogue is empty: start the system with its demo catalogue");
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let total = (args.rate * args.duration_secs as f64).ceil() as usize;
    if let (Some(email), Some(password)) = (&args.admin_email, &args.admin_password) {
        let admin = token(&http, &target, email, password).await?;
        for sku in &skus {
            let response = http
                .put(format!("{target}/api/products/{sku}/stock"))
                .bearer_auth(&admin)
                .json(&json!({"quantity": total * 2 + 1000}))
                .send()
                .await?;
            json_of(response)
                .await
                .with_context(|| format!("raise stock of {sku}"))?;
        }
    } else {
        eprintln!(
            "loadgen: no --admin-email; orders will be cancelled out_of_stock once the demo stock runs out"
        );
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut tokens = Vec::with_capacity(args.customers);
    for n in 0..args.customers.max(1) {
        tokens.push(Arc::<str>::from(customer(&http, &target, &run_id, n).await?));
    }
    crate::sayln!(
        "loadgen: {total} orders at {:.1}/s over {} s against {target} ({} customers, card {})",
        args.rate,
        args.duration_secs,
        tokens.len(),
        args.card
    );
    let skus: Vec<Arc<str>> = skus.into_iter().map(Arc::from).collect();
    let permits = Arc::new(Semaphore::new(args.max_in_flight));
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let shared = Arc::new(Shared {
        http,
        args,
        report: Mutex::default(),
    });
    let cpu_before = cpu_time();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut delayed_starts = 0;
    for i in 0..total {
        #[allow(clippy::cast_precision_loss)]
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = if let Ok(p) = Arc::clone(&permits).try_acquire_owned() {
            p
        } else {
            delayed_starts += 1;
            Arc::clone(&permits)
                .acquire_owned()
                .await
                .context("semaphore closed")?
        };
        let shared = Arc::clone(&shared);
        let token = Arc::clone(&tokens[i % tokens.len()]);
        let sku = Arc::clone(&skus[i % skus.len()]);
        tasks.spawn(async move {
            let outcome = one_order(&shared, &token, &sku).await;
            shared.record(outcome);
            drop(permit);
        });
        // Reap finished orders as we go, so the set stays as small as what is in flight.
        while tasks.try_join_next().is_some() {}
    }
    let offered_for = start.elapsed();
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let mut report = std::mem::take(&mut *shared.report.lock().unwrap_or_else(PoisonError::into_inner));
    report.offered = total;
    report.offered_for = offered_for;
    report.elapsed = elapsed;
    report.delayed_starts = delayed_starts;
    report.cpu = cpu;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_read_from_the_servers_times() {
        let order = json!({"timeline": {
            "placed_at": "2026-12-06T18:00:00Z",
            "reserved_at": "2026-12-06T18:00:00.040Z",
            "paid_at": "2026-12-06T18:00:00.100Z",
            "confirmed_at": "2026-12-06T18:00:00.100Z",
        }});
        let [reserve, charge, confirm, total] = phases(&order).unwrap();
        assert_eq!(reserve, Duration::from_millis(40));
        assert_eq!(charge, Duration::from_millis(60));
        assert_eq!(confirm, Duration::ZERO);
        assert_eq!(total, Duration::from_millis(100));
        assert!(phases(&json!({"timeline": {"placed_at": "2026-12-06T18:00:00Z"}})).is_none());
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut samples = Samples::default();
        assert_eq!(samples.percentile(50.0), Duration::ZERO);
        for ms in (1..=100).rev() {
            samples.push(Duration::from_millis(ms));
        }
        assert_eq!(samples.percentile(50.0), Duration::from_millis(51));
        assert_eq!(samples.percentile(99.0), Duration::from_millis(99));
        assert_eq!(samples.percentile(100.0), Duration::from_millis(100));
    }

    #[test]
    fn the_report_says_plainly_when_the_rate_limit_throttled_the_run() {
        let mut report = Report::default();
        assert!(report.to_string().contains("rate limited, 429     none"));
        report.record(Outcome::RateLimited);
        assert!(
            report
                .to_string()
                .contains("RATE LIMITED, 429     1 orders refused")
        );
    }
}
