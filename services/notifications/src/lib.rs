//! The notifications service: the communication hub. It turns other services' events into
//! messages for customers, in their language, on the channels they accept, and keeps a log of
//! every delivery.
//!
//! Flow: three inbox consumers (`notifications-on-identity`, `-on-customers`, `-on-orders`)
//! apply events exactly once. Customers' events keep a local copy of each customer's email,
//! name and preferences (the service never calls customers). Identity's `UserRegistered` and
//! orders' `OrderConfirmed`/`OrderCancelled`/`OrderShipped`/`OrderDelivered` render a built-in
//! template and write one `notifications` row per (event, channel) in the inbox's transaction;
//! a unique key on (event id, channel) means a redelivered event never writes a second. The
//! mailbox row is delivered at once; an email row is sent by the [`delivery`] worker over SMTP
//! with retries, claimed by a conditional `UPDATE` so replicas never send the same email, and
//! never sent twice (see [`delivery`] for the crash window).
//!
//! Choices worth knowing:
//! - Channels: the mailbox always; email when the customer's email channel is on, an address is
//!   known, and `[smtp] enabled`. Marketing opt-in does not apply to these transactional kinds.
//! - An order event for a customer we have not heard of yet (orders overtook customers on the
//!   bus) still reaches the mailbox, in English without a name; with no address there is no
//!   email. `UserRegistered` itself records the address, so a welcome can always be emailed.
//! - With SMTP disabled (the default, so embedded mode needs no mail server) no email rows are
//!   written at all: turning SMTP on later does not send a backlog of old news.
//!
//! Layout:
//! - `domain/`: kinds, channels, locales, money formatting, templates, channel choice (no I/O).
//! - `events`: the [`events::Notifier`] handler every inbox runs.
//! - `store`: the SQL (customer copies, notifications, the attempt log) and migrations.
//! - `smtp`: a small SMTP client and [`SmtpConfig`].
//! - `delivery`: the email worker and its backoff.
//! - `metrics`: `mercato_notifications_total{kind, channel, outcome}`.
//! - `api/`: `GET /api/notifications` and the one error mapping.
#![forbid(unsafe_code)]

mod api;
pub mod delivery;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod smtp;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mercato_messaging::{Bus, BusError, ConsumerMetrics, ConsumerSpec, Inbox, InboxConfig};
use mercato_runtime::{Background, HttpConfig, Registry, Server, Service};
use mercato_security::VerifierConfig;
use mercato_storage::{DatabaseConfig, Db, StorageError};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use smtp::SmtpConfig;

/// The service's name on the wire, in logs and metrics.
pub const NAME: &str = "notifications";

/// How often the email worker looks for due email when nothing woke it.
pub const DEFAULT_WORKER_POLL_MS: u64 = 1_000;

/// The consumer groups, one per category consumed.
pub const CONSUMERS: [(&str, &str); 3] = [
    ("notifications-on-identity", mercato_contracts::identity::CATEGORY),
    (
        "notifications-on-customers",
        mercato_contracts::customers::CATEGORY,
    ),
    ("notifications-on-orders", mercato_contracts::orders::CATEGORY),
];

/// Everything notifications needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: VerifierConfig,
    /// Where identity publishes its keys.
    pub jwks_url: String,
    pub inbox: InboxConfig,
    pub smtp: SmtpConfig,
    /// How often the email worker looks for due email when nothing woke it (retries that come
    /// due, work left by another replica).
    pub worker_poll_ms: u64,
}

/// The service's own section of a configuration file (`[notifications]`), for the binary to
/// read and hand on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    pub smtp: SmtpConfig,
    pub worker_poll_ms: u64,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            smtp: SmtpConfig::default(),
            worker_poll_ms: DEFAULT_WORKER_POLL_MS,
        }
    }
}

impl NotificationsConfig {
    /// The first setting that cannot work, with its key under `[notifications]`.
    #[must_use]
    pub fn invalid_setting(&self) -> Option<(String, String)> {
        if let Some((key, message)) = self.smtp.invalid_setting() {
            return Some((format!("smtp.{key}"), message));
        }
        if self.worker_poll_ms == 0 {
            return Some(("worker_poll_ms".into(), "must be greater than 0".into()));
        }
        None
    }
}

/// Why notifications could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: notifications.{key}: {message}")]
    Config { key: String, message: String },
    #[error("notifications database: {0}")]
    Storage(#[from] StorageError),
    #[error("notifications event bus: {0}")]
    Bus(#[from] BusError),
    #[error("notifications cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Connects to the database and applies notifications' migrations.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn open_database(config: &DatabaseConfig) -> Result<Db, StorageError> {
    mercato_storage::open(config, NAME, store::MIGRATIONS).await
}

pub use mercato_runtime::App;

/// Validates the settings, opens the database, binds the listener, and prepares the three
/// inbox consumers and (when SMTP is enabled) the email worker.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    let settings = NotificationsConfig {
        smtp: config.smtp.clone(),
        worker_poll_ms: config.worker_poll_ms,
    };
    if let Some((key, message)) = settings.invalid_setting() {
        return Err(StartError::Config { key, message });
    }
    let db = open_database(&config.database).await?;
    let verifier = mercato_runtime::auth::jwks_verifier(config.auth.clone(), &config.jwks_url);

    let mut registry = Registry::default();
    let metrics = metrics::NotificationMetrics::register(&mut registry);
    let consumer_metrics = ConsumerMetrics::register(&mut registry);
    let wake_worker = Arc::new(Notify::new());
    let mut background = Background::new();
    for (group, category) in CONSUMERS {
        let handler = events::Notifier::new(config.smtp.enabled, Arc::clone(&wake_worker), metrics.clone());
        let spec = ConsumerSpec {
            group: group.into(),
            category: category.into(),
        };
        let inbox = Inbox::new(
            db.clone(),
            bus.clone(),
            spec,
            handler,
            config.inbox.clone(),
            consumer_metrics.clone(),
        );
        background.add(group, move |token| inbox.run(token));
    }
    if config.smtp.enabled {
        let worker = delivery::Worker::new(
            db.clone(),
            config.smtp.clone(),
            Duration::from_millis(config.worker_poll_ms),
            wake_worker,
            metrics,
        );
        background.add("email delivery", move |token| worker.run(token));
    } else {
        tracing::info!("SMTP is disabled: notifications go to the mailbox only");
    }

    let readiness = mercato_messaging::health::readiness(&db, &bus);
    let service = Service {
        name: NAME,
        routes: api::router(db.clone(), verifier),
        readiness,
        registry,
        own_fallback: false,
    };
    let server = Server::bind(config.listen, &config.http, service)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let grace = Duration::from_millis(config.http.shutdown_grace_ms);
    Ok(App::new(server, background, grace).close_on_stop(async move { db.close().await }))
}
