//! `mercato loadgen`: checkout load at a constant arrival rate, through the public API.
//!
//! Setup registers customers (and, with admin credentials, tops up stock). Then an order is
//! started every `1/rate` seconds whatever happened to the previous ones (an open model, so a
//! slow system shows as latency rather than as a lower offered rate); each order is polled until
//! it is confirmed or cancelled. The report gives the offered and achieved rates and the latency
//! from `POST /api/orders` to `confirmed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

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
    /// Most orders in flight at once; beyond it new orders wait (and the report says so).
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// How long one order may take to reach an end state before it counts as stuck.
    #[arg(long, default_value_t = 60)]
    pub order_timeout_secs: u64,
}

#[derive(Debug, Default)]
struct Tally {
    confirmed: Vec<Duration>,
    cancelled: usize,
    refused: usize,
    errors: usize,
    stuck: usize,
    delayed_starts: usize,
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One order: place it and poll until it ends.
async fn one_order(
    http: reqwest::Client,
    args: Arc<LoadgenArgs>,
    token: String,
    sku: String,
    tally: Arc<Mutex<Tally>>,
) {
    let started = Instant::now();
    let body = json!({
        "items": [{"sku": sku, "quantity": 1}],
        "payment": {"card_token": args.card},
        "shipping_address": {"line1": "1 Load St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    });
    let placed = http
        .post(format!("{}/api/orders", args.target))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await;
    let id = match placed {
        Ok(r) if r.status() == 201 => match r.json::<Value>().await {
            Ok(v) => v["id"].as_str().unwrap_or_default().to_owned(),
            Err(_) => return tally.lock().await.errors += 1,
        },
        Ok(r) if r.status().is_client_error() => return tally.lock().await.refused += 1,
        _ => return tally.lock().await.errors += 1,
    };
    let deadline = started + Duration::from_secs(args.order_timeout_secs);
    let mut pause = Duration::from_millis(10);
    loop {
        if Instant::now() > deadline {
            return tally.lock().await.stuck += 1;
        }
        let status = match http
            .get(format!("{}/api/orders/{id}", args.target))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_owned)),
            _ => None,
        };
        match status.as_deref() {
            Some("confirmed") => return tally.lock().await.confirmed.push(started.elapsed()),
            Some("cancelled") => return tally.lock().await.cancelled += 1,
            _ => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Runs the load and prints the report.
///
/// # Errors
/// The setup failed (the system is not reachable, registration failed).
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be between 0 and 10000 orders per second");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.max_in_flight)
        .build()?;
    let target = args.target.trim_end_matches('/').to_owned();
    let args = Arc::new(LoadgenArgs {
        target: target.clone(),
        ..args
    });

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
    let total = (args.rate * args.duration_secs as f64).ceil() as usize;
    if let Some(email) = &args.admin_email {
        let password = std::env::var("MERCATO_ADMIN_PASSWORD")
            .context("set MERCATO_ADMIN_PASSWORD for --admin-email")?;
        let admin = token(&http, &target, email, &password).await?;
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
        tokens.push(customer(&http, &target, &run_id, n).await?);
    }
    println!(
        "loadgen: {total} orders at {:.1}/s over {} s against {target} ({} customers, card {})",
        args.rate,
        args.duration_secs,
        tokens.len(),
        args.card
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let permits = Arc::new(Semaphore::new(args.max_in_flight));
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tally.lock().await.delayed_starts += 1;
                Arc::clone(&permits)
                    .acquire_owned()
                    .await
                    .context("semaphore closed")?
            }
        };
        let (http, args, tally) = (http.clone(), Arc::clone(&args), Arc::clone(&tally));
        let token = tokens[i % tokens.len()].clone();
        let sku = skus[i % skus.len()].clone();
        tasks.spawn(async move {
            one_order(http, args, token, sku, tally).await;
            drop(permit);
        });
    }
    let offered_for = start.elapsed();
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let mut tally = std::mem::take(&mut *tally.lock().await);
    tally.confirmed.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "offered rate      {:.1} orders/s",
        total as f64 / offered_for.as_secs_f64()
    );
    println!(
        "confirmed         {} ({:.1} orders/s over {:.1} s)",
        tally.confirmed.len(),
        tally.confirmed.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("cancelled         {}", tally.cancelled);
    println!("refused (4xx)     {}", tally.refused);
    println!("errors            {}", tally.errors);
    println!("stuck (>{} s)     {}", args.order_timeout_secs, tally.stuck);
    println!(
        "delayed starts    {} (more than {} in flight)",
        tally.delayed_starts, args.max_in_flight
    );
    println!(
        "POST → confirmed  p50 {:.1} ms   p90 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        ms(percentile(&tally.confirmed, 50.0)),
        ms(percentile(&tally.confirmed, 90.0)),
        ms(percentile(&tally.confirmed, 99.0)),
        ms(percentile(&tally.confirmed, 100.0)),
    );
    Ok(())
}
