//! The gateway as `scripts/bench-gateway.sh` runs it: one route, `/`, to one upstream, in one of
//! four modes, so that the cost of each check can be told apart.
//!
//! - `plain`: a public route, rate limiting off; the same work as a plain reverse proxy.
//! - `jwt`: the route requires a bearer token; rate limiting off.
//! - `rate-limit`: a public route, rate limiting on (keyed by client address).
//! - `jwt-rate-limit`: both, as production runs; the limit is keyed by the token's subject.
//!
//! The process also serves a JWKS on a loopback port (`mercato_testkit`'s `TestIssuer`), which
//! the gateway fetches over HTTP as it fetches identity's; in the `jwt` modes it writes a valid
//! ES256 token from that issuer to `--token-file`. The rate class admits a million requests a second, far above what one machine
//! offers, so every request is checked and none is refused.
//!
//! ```sh
//! cargo run --release -p mercato-gateway --example bench_gateway -- \
//!     --upstream http://127.0.0.1:9001 --mode jwt-rate-limit --workers 2 \
//!     --port-file /tmp/gw.port --token-file /tmp/gw.token
//! ```
//!
//! `--forged-token-file` writes a token whose signature is another token's (a forged-token
//! flood's request), `--preauth off` turns the per-address failure limit off, and
//! `--trusted-proxy 127.0.0.1` lets the load generator name its client in `X-Forwarded-For`.
//!
//! `--overload on|off` measures latency at twice an upstream's capacity instead, with adaptive
//! concurrency on or off: the process starts its own upstream (at most 8 requests at once, each
//! 20 ms: 400 a second), sends the gateway 800 requests a second at a constant rate (new
//! requests do not wait for earlier answers, as real clients do not) for `--overload-secs`
//! (10), prints one Markdown row (answered, shed, latency of the answered requests) and exits.
//!
//! Logs go to stderr as JSON, filtered by `RUST_LOG` (the benchmark sets `warn`, as nginx's
//! access log is off there too).

use mercato_gateway::config::DEFAULT_CLASS;
use mercato_gateway::{Config, GatewayConfig, RateClassConfig, RouteAuth, RouteConfig};
use mercato_runtime::telemetry::{self, LogFormat};
use mercato_runtime::{CancellationToken, ClientConfig, HttpConfig};
use mercato_testkit::auth::TestIssuer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The allocator the `mercato` binary runs with, so that the benchmark measures the gateway as
/// it is deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The example is a binary: every failure ends it with a message.
type Error = Box<dyn std::error::Error + Send + Sync>;

/// Adds what was being done to a failure.
fn context<T, E: std::fmt::Display>(result: Result<T, E>, doing: &str) -> Result<T, Error> {
    result.map_err(|e| format!("{doing}: {e}").into())
}

/// The limiter's largest accepted rate: far above what this machine can offer, so nothing is refused.
const UNREFUSED_RATE: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Jwt,
    RateLimit,
    JwtRateLimit,
}

impl Mode {
    fn parse(name: &str) -> Result<Self, Error> {
        Ok(match name {
            "plain" => Self::Plain,
            "jwt" => Self::Jwt,
            "rate-limit" => Self::RateLimit,
            "jwt-rate-limit" => Self::JwtRateLimit,
            other => {
                return Err(
                    format!("--mode {other:?}: expected plain, jwt, rate-limit or jwt-rate-limit").into(),
                );
            }
        })
    }

    fn verifies_tokens(self) -> bool {
        matches!(self, Self::Jwt | Self::JwtRateLimit)
    }

    fn limits_rate(self) -> bool {
        matches!(self, Self::RateLimit | Self::JwtRateLimit)
    }
}

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    upstream: String,
    mode: Mode,
    workers: usize,
    port_file: PathBuf,
    token_file: Option<PathBuf>,
    /// A token with a valid header and claims but another token's signature: each use costs
    /// a full signature check unless the pre-authentication limit stops it.
    forged_token_file: Option<PathBuf>,
    trusted_proxy: Option<String>,
    preauth: bool,
    /// Adaptive concurrency on or off for the overload run; `None`: serve until stopped.
    overload: Option<bool>,
    overload_secs: u64,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, Error> {
        let mut values = BTreeMap::new();
        while let Some(flag) = args.next() {
            let Some(name) = flag.strip_prefix("--") else {
                return Err(format!("unexpected argument {flag:?}").into());
            };
            let value = args.next().ok_or_else(|| format!("--{name} needs a value"))?;
            values.insert(name.to_owned(), value);
        }
        let mut take = |name: &str| values.remove(name);
        let required =
            |value: Option<String>, name: &str| value.ok_or_else(|| format!("--{name} is required"));
        let parsed = Self {
            listen: context(
                take("listen").unwrap_or_else(|| "127.0.0.1:0".into()).parse(),
                "--listen must be an address such as 127.0.0.1:0",
            )?,
            upstream: take("upstream").unwrap_or_default(),
            mode: Mode::parse(&required(take("mode"), "mode")?)?,
            workers: context(
                take("workers").unwrap_or_else(|| "2".into()).parse(),
                "--workers must be a number",
            )?,
            port_file: required(take("port-file"), "port-file")?.into(),
            token_file: take("token-file").map(PathBuf::from),
            forged_token_file: take("forged-token-file").map(PathBuf::from),
            trusted_proxy: take("trusted-proxy"),
            preauth: match take("preauth").as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => return Err(format!("--preauth {other:?}: expected on or off").into()),
            },
            overload: match take("overload").as_deref() {
                None => None,
                Some("on") => Some(true),
                Some("off") => Some(false),
                Some(other) => return Err(format!("--overload {other:?}: expected on or off").into()),
            },
            overload_secs: context(
                take("overload-secs").unwrap_or_else(|| "10".into()).parse(),
                "--overload-secs must be a number",
            )?,
        };
        if parsed.upstream.is_empty() && parsed.overload.is_none() {
            return Err("--upstream is required".into());
        }
        if let Some(unknown) = values.keys().next() {
            return Err(format!("unknown option --{unknown}").into());
        }
        if parsed.workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        if parsed.mode.verifies_tokens() && parsed.token_file.is_none() {
            return Err("--token-file is required in the jwt modes".into());
        }
        Ok(parsed)
    }
}

fn main() -> Result<(), Error> {
    let args = Args::parse(std::env::args().skip(1))?;
    // The worker count is fixed, not the machine's default, so nginx gets as many processes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build();
    context(runtime, "start the runtime")?.block_on(run(args))
}

async fn run(mut args: Args) -> Result<(), Error> {
    telemetry::init(LogFormat::Json);
    if args.overload.is_some() {
        args.upstream = overload::slow_upstream().await?;
    }
    // Its token lives 15 minutes, longer than any run of one mode.
    let issuer = TestIssuer::start().await;
    let config = gateway_config(&args, &issuer);
    let app = mercato_gateway::build(&config).await?;
    if let Some(adaptive) = args.overload {
        let url = format!("http://127.0.0.1:{}/", app.port());
        let stop = CancellationToken::new();
        let serving = tokio::spawn(app.run_until_stopped(stop.clone()));
        let report = overload::run(&url, std::time::Duration::from_secs(args.overload_secs)).await?;
        println!("{}", report.row(adaptive));
        stop.cancel();
        let _ = serving.await;
        return Ok(());
    }
    if let Some(path) = &args.token_file {
        let token = issuer.token("bench", &["customer"]);
        context(std::fs::write(path, token), &format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.forged_token_file {
        let victim = issuer.token("mallory", &["admin"]);
        let other = issuer.token("someone-else", &["customer"]);
        let (signed, _) = victim.rsplit_once('.').ok_or("a token has three segments")?;
        let (_, signature) = other.rsplit_once('.').ok_or("a token has three segments")?;
        let forged = format!("{signed}.{signature}");
        context(std::fs::write(path, forged), &format!("write {}", path.display()))?;
    }
    // Written last: the script starts measuring once the port is known.
    let port = std::fs::write(&args.port_file, app.port().to_string());
    context(port, &format!("write {}", args.port_file.display()))?;
    app.run_until_stopped(CancellationToken::new()).await?;
    Ok(())
}

fn gateway_config(args: &Args, issuer: &TestIssuer) -> Config {
    let auth = if args.mode.verifies_tokens() {
        RouteAuth::Required
    } else {
        RouteAuth::Public
    };
    let mut gateway = GatewayConfig {
        routes: vec![RouteConfig::new("/", "bench", auth)],
        rules: Vec::new(),
        ..GatewayConfig::default()
    };
    gateway.rate_limit.enabled = args.mode.limits_rate();
    gateway.preauth.enabled = args.preauth;
    gateway.trusted_proxies = args.trusted_proxy.iter().cloned().collect();
    gateway.adaptive_concurrency.enabled = args.overload == Some(true);
    gateway.rate_limit.classes = BTreeMap::from([(
        DEFAULT_CLASS.to_owned(),
        RateClassConfig {
            rate_per_second: UNREFUSED_RATE,
            burst: UNREFUSED_RATE,
        },
    )]);
    Config {
        listen: args.listen,
        http: HttpConfig::default(),
        client: ClientConfig::default(),
        gateway,
        auth: issuer.config(),
        upstreams: BTreeMap::from([("bench".to_owned(), vec![args.upstream.clone()])]),
        jwks_url: issuer.jwks_url().to_owned(),
        tls: None,
    }
}

/// Latency at twice an upstream's capacity.
mod overload {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{Error, context};

    /// Requests the upstream serves at once, and how long each takes.
    const AT_ONCE: usize = 8;
    const SERVICE: Duration = Duration::from_millis(20);
    /// Twice what the upstream can serve: 8 / 20 ms = 400 a second.
    const OFFERED_PER_SECOND: u32 = 800;

    /// An upstream that serves [`AT_ONCE`] requests at a time, [`SERVICE`] each; the rest wait.
    pub async fn slow_upstream() -> Result<String, Error> {
        let permits = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
        let serve = move || {
            let permits = Arc::clone(&permits);
            async move {
                let _serving = permits.acquire().await;
                tokio::time::sleep(SERVICE).await;
                "ok"
            }
        };
        let listener = context(
            tokio::net::TcpListener::bind("127.0.0.1:0").await,
            "bind the upstream",
        )?;
        let url = format!(
            "http://{}",
            context(listener.local_addr(), "the upstream's address")?
        );
        tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(serve)).await });
        Ok(url)
    }

    pub struct Report {
        seconds: f64,
        answered: Vec<Duration>,
        shed: usize,
        other: usize,
    }

    impl Report {
        fn percentile(&self, p: f64) -> String {
            if self.answered.is_empty() {
                return "—".into();
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let i = ((self.answered.len() as f64 * p).ceil() as usize).clamp(1, self.answered.len()) - 1;
            format!("{:.1} ms", self.answered[i].as_secs_f64() * 1000.0)
        }

        /// `| adaptive | offered/s | answered 200/s | shed 503/s | other | p50 | p99 |` of the 200s.
        #[allow(clippy::cast_precision_loss)]
        pub fn row(&self, adaptive: bool) -> String {
            format!(
                "| adaptive concurrency {} | {} | {:.0} | {:.0} | {} | {} | {} |",
                if adaptive { "on" } else { "off" },
                OFFERED_PER_SECOND,
                self.answered.len() as f64 / self.seconds,
                self.shed as f64 / self.seconds,
                self.other,
                self.percentile(0.5),
                self.percentile(0.99),
            )
        }
    }

    /// Sends GETs to `url` at [`OFFERED_PER_SECOND`] for `duration`, each on its own task.
    pub async fn run(url: &str, duration: Duration) -> Result<Report, Error> {
        let client = context(
            reqwest::Client::builder().no_proxy().build(),
            "build the load's client",
        )?;
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / OFFERED_PER_SECOND);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut requests = tokio::task::JoinSet::new();
        let start = Instant::now();
        while start.elapsed() < duration {
            ticks.tick().await;
            let (client, url) = (client.clone(), url.to_owned());
            requests.spawn(async move {
                let sent = Instant::now();
                let status = client.get(&url).send().await.map_or(0, |r| r.status().as_u16());
                (status, sent.elapsed())
            });
        }
        let seconds = start.elapsed().as_secs_f64();
        let mut report = Report {
            seconds,
            answered: Vec::new(),
            shed: 0,
            other: 0,
        };
        while let Some(done) = requests.join_next().await {
            match context(done, "a request task")? {
                (200, latency) => report.answered.push(latency),
                (503, _) => report.shed += 1,
                _ => report.other += 1,
            }
        }
        report.answered.sort_unstable();
        Ok(report)
    }
}
