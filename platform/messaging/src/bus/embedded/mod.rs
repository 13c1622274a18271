//! The embedded bus: a durable log and consumer groups in one SQLite file.
//!
//! - `bus_messages` is the log, one row per event id, so an event published twice is stored once;
//!   its indexed `event_type` lets a group that takes only some types skip the others cheaply.
//! - [`consumer`]: `bus_groups` holds each group's cursor into its category: a group that was away
//!   reads on from where it stopped; a new group starts at the beginning. `bus_pending` holds what
//!   a group has claimed and not yet acknowledged, with the time it may be claimed again. Claims
//!   happen in one write transaction (`BEGIN IMMEDIATE`), so members of a group, in this process
//!   or in another that opened the same file, never hold a message at once.
//! - [`dead_letter`]: `bus_dead_letters` holds parked messages, by log position, until they are
//!   replayed.
//! - [`subscription`]: tails the log from where it was when it subscribed.
//! - [`retention`]: the log is trimmed once every group of a message's category has passed it
//!   and its replay window (`bus.retention_secs`) has gone by; claimed and parked messages stay.
//! - [`runs`]: each open bus is a run with a lease in `bus_members`; a claim names its run, so
//!   the claims of a process that died are released once its lease lapses (a few seconds), not
//!   after the ack wait, and a live run's claims are never touched.
//!
//! A waiting `fetch` or subscription is woken by publishes in this process of what it reads
//! ([`wakers`]) and polls for those of other processes.

mod batch;
mod consumer;
mod dead_letter;
mod retention;
mod runs;
mod subscription;
mod wakers;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use consumer::{EmbeddedConsumer, EmbeddedHandle};
use mercato_storage::{DatabaseConfig, Db, Migration};
pub use subscription::EmbeddedSubscription;

use super::{BusConfig, BusError};
use crate::envelope::Envelope;

/// The bus tables, applied by [`EmbeddedBus::open`] under the service name `bus`.
pub const MIGRATIONS: &[Migration] = &[
    Migration::new(1, "bus_log", include_str!("../../../migrations/bus_1_log.sql")),
    Migration::new(
        2,
        "bus_event_types",
        include_str!("../../../migrations/bus_2_event_types.sql"),
    ),
    Migration::new(3, "bus_runs", include_str!("../../../migrations/bus_3_runs.sql")),
    Migration::new(
        4,
        "bus_retention",
        include_str!("../../../migrations/bus_4_retention.sql"),
    ),
];

/// How often a waiting fetch looks for messages another process published or that became visible
/// again; publishes in this process wake it at once.
const POLL: Duration = Duration::from_millis(50);

/// The embedded bus: a pool on the bus file, shared by every clone.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    pub(super) db: Db,
    ack_wait_ms: i64,
    wakers: Arc<wakers::Wakers>,
    /// Fetches of this process that found nothing and wait; see [`EmbeddedBus::fetches_waiting`].
    waiting: Arc<AtomicUsize>,
    run: Arc<runs::Run>,
    _trimmer: Arc<crate::bus::in_hand::Keeper>,
}

impl EmbeddedBus {
    /// Opens (creating if needed) the bus file and applies its migrations.
    ///
    /// # Errors
    /// [`BusError::Config`] for a URL that is not a usable SQLite URL or a zero ack wait;
    /// [`BusError::Storage`] when the file cannot be opened or migrated.
    pub async fn open(config: &BusConfig) -> Result<Self, BusError> {
        if !config.url.starts_with("sqlite:") {
            return Err(BusError::Config(format!(
                "bus.url {:?} is not a sqlite: URL",
                config.url
            )));
        }
        if config.url.contains('{') {
            return Err(BusError::Config(format!(
                "bus.url {:?} still holds a placeholder",
                config.url
            )));
        }
        if config.ack_wait_ms == 0 {
            return Err(BusError::Config("bus.ack_wait_ms must be above 0".into()));
        }
        if config.retention_secs == 0 {
            return Err(BusError::Config("bus.retention_secs must be above 0".into()));
        }
        let db = Db::connect(&DatabaseConfig {
            url: config.url.clone(),
            sqlite_synchronous: config.sqlite_synchronous,
            ..DatabaseConfig::default()
        })
        .await?;
        mercato_storage::migrate(&db, "bus", MIGRATIONS).await?;
        let ack_wait_ms = i64::try_from(config.ack_wait_ms).unwrap_or(i64::MAX);
        let wakers = Arc::new(wakers::Wakers::default());
        let run = runs::Run::start(db.clone(), ack_wait_ms, Arc::clone(&wakers)).await?;
        Ok(Self {
            db: db.clone(),
            ack_wait_ms,
            wakers,
            waiting: Arc::new(AtomicUsize::new(0)),
            run: Arc::new(run),
            _trimmer: Arc::new(retention::keep_trimmed(
                db.clone(),
                Duration::from_secs(config.retention_secs),
            )),
        })
    }

    /// Appends `envelope` to the log unless its id is already there.
    ///
    /// # Errors
    /// [`BusError::Malformed`] for a category no backend accepts; [`BusError::Storage`].
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        self.publish_batch(std::slice::from_ref(envelope))
            .await
            .map_err(|failed| failed.error)
    }

    /// How many fetches in this process have looked, found nothing and are waiting for a message
    /// (what JetStream reports as a consumer's `num_waiting`; other processes' are not counted).
    #[must_use]
    pub fn fetches_waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// # Errors
    /// The bus file cannot be read.
    pub async fn ping(&self) -> Result<(), BusError> {
        Ok(self.db.ping().await?)
    }
}

fn parse(position: i64, body: &str) -> Result<Envelope, BusError> {
    serde_json::from_str(body).map_err(|e| BusError::Malformed {
        id: format!("bus message {position}"),
        reason: e.to_string(),
    })
}
