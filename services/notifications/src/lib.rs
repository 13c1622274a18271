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

pub use api::openapi;
pub mod delivery;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod smtp;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use mercato_kit::{ServiceBuilder, StartError};
use mercato_messaging::Bus;
use mercato_runtime::settings::{InvalidSetting, Validate, positive, section};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use mercato_runtime::App;
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

/// The service's own settings (`[notifications]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    pub smtp: SmtpConfig,
    /// How often the email worker looks for due email when nothing woke it (retries that come
    /// due, work left by another replica).
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

impl Validate for NotificationsConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        section("smtp", &self.smtp)?;
        positive(self.worker_poll_ms, "worker_poll_ms")
    }
}

mercato_kit::service_config! {
    /// Everything notifications needs to start.
    pub struct Config {
        pub notifications: NotificationsConfig => "notifications",
    }
}

/// Opens the database, binds the listener, and prepares the inboxes and the email worker.
///
/// # Errors
/// See [`StartError`].
pub async fn build(config: &Config, bus: Bus) -> Result<App, StartError> {
    let mut kit = ServiceBuilder::open(NAME, config, &config.service, store::MIGRATIONS, bus).await?;
    let settings = &config.notifications;
    let metrics = metrics::NotificationMetrics::register(kit.registry());
    let wake_worker = Arc::new(Notify::new());
    for (group, category) in CONSUMERS {
        let handler = events::Notifier::new(settings.smtp.enabled, Arc::clone(&wake_worker), metrics.clone());
        kit.inbox(group, category, handler);
    }
    if settings.smtp.enabled {
        let worker = delivery::Worker::new(
            kit.db().clone(),
            settings.smtp.clone(),
            Duration::from_millis(settings.worker_poll_ms),
            wake_worker,
            metrics,
        );
        kit.background("email delivery", move |token| worker.run(token));
    } else {
        tracing::info!("SMTP is disabled: notifications go to the mailbox only");
    }
    let routes = api::router(kit.db().clone(), kit.verifier());
    kit.serve(routes).await
}
