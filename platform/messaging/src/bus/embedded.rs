//! The embedded bus: a durable log and consumer groups in one SQLite file.
//!
//! - `bus_messages` is the log, one row per event id, so an event published twice is stored once.
//! - `bus_groups` holds each group's cursor into its category: a group that was away reads on
//!   from where it stopped; a new group starts at the beginning.
//! - `bus_pending` holds what a group has claimed and not yet acknowledged, with the time it may be
//!   claimed again. Claims happen in one write transaction (`BEGIN IMMEDIATE`), so members of a
//!   group, in this process or in another that opened the same file, never hold a message at once.
//! - `bus_dead_letters` holds parked messages, by log position, until they are replayed.
//!
//! A waiting `fetch` is woken by publishes in this process and polls for those of other processes.
//! A subscription tails the log from where it was when it subscribed, the same way.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use mercato_storage::sqlx;
use mercato_storage::{DatabaseConfig, Db, Migration, StorageError, now_millis};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{BusConfig, BusError, ConsumerSpec, DeadLetter, Delivery, DeliveryHandle};
use crate::envelope::Envelope;

/// The bus tables, applied by [`EmbeddedBus::open`] under the service name `bus`.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "bus_log",
    sql: include_str!("../../migrations/bus_1_log.sql"),
    postgres_sql: None,
}];

/// How often a waiting fetch looks for messages another process published or that became visible
/// again; publishes in this process wake it at once.
const POLL: Duration = Duration::from_millis(50);

/// How many log rows a subscription reads at a time.
const SUBSCRIPTION_BATCH: i64 = 256;

/// Longest error text kept with a dead letter: the store is bounded, a stack of causes is not.
const MAX_ERROR_BYTES: usize = 4096;

/// The embedded bus: a pool on the bus file, shared by every clone.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    db: Db,
    ack_wait_ms: i64,
    published: Arc<Notify>,
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
        let db = Db::connect(&DatabaseConfig {
            url: config.url.clone(),
            sqlite_synchronous: config.sqlite_synchronous,
            ..DatabaseConfig::default()
        })
        .await?;
        mercato_storage::migrate(&db, "bus", MIGRATIONS).await?;
        Ok(Self {
            db,
            ack_wait_ms: i64::try_from(config.ack_wait_ms).unwrap_or(i64::MAX),
            published: Arc::new(Notify::new()),
        })
    }

    /// Appends `envelope` to the log unless its id is already there.
    ///
    /// # Errors
    /// [`BusError::Malformed`] for a category no backend accepts; [`BusError::Storage`].
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        check_category(envelope)?;
        let body = serde_json::to_string(envelope).map_err(|e| BusError::Malformed {
            id: envelope.id.clone(),
            reason: e.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO bus_messages (event_id, category, envelope, published_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&envelope.id)
        .bind(envelope.category())
        .bind(body)
        .bind(now_millis())
        .execute(self.db.pool())
        .await
        .map_err(StorageError::from)?;
        self.published.notify_waiters();
        Ok(())
    }

    /// Joins group `spec`, creating it at the start of the log when it is new.
    ///
    /// # Errors
    /// Invalid names; [`BusError::Storage`].
    pub async fn consumer(&self, spec: &ConsumerSpec) -> Result<EmbeddedConsumer, BusError> {
        spec.validate()?;
        sqlx::query(
            "INSERT INTO bus_groups (group_name, category, cursor, created_at) VALUES ($1, $2, 0, $3)
             ON CONFLICT (group_name, category) DO NOTHING",
        )
        .bind(&spec.group)
        .bind(&spec.category)
        .bind(now_millis())
        .execute(self.db.pool())
        .await
        .map_err(StorageError::from)?;
        Ok(EmbeddedConsumer {
            bus: self.clone(),
            group: spec.group.clone(),
            category: spec.category.clone(),
        })
    }

    /// Starts tailing the log of `category` at its current end.
    ///
    /// # Errors
    /// [`BusError::Storage`].
    pub async fn subscribe(&self, category: &str) -> Result<EmbeddedSubscription, BusError> {
        let end: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM bus_messages WHERE category = $1")
                .bind(category)
                .fetch_one(self.db.pool())
                .await
                .map_err(StorageError::from)?;
        Ok(EmbeddedSubscription {
            bus: self.clone(),
            category: category.to_owned(),
            cursor: end,
            ready: VecDeque::new(),
        })
    }

    /// # Errors
    /// The bus file cannot be read.
    pub async fn ping(&self) -> Result<(), BusError> {
        Ok(self.db.ping().await?)
    }

    /// The oldest dead letters first, at most `limit`.
    ///
    /// # Errors
    /// [`BusError::Storage`]; [`BusError::Malformed`] if a stored envelope no longer parses.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let rows: Vec<(i64, String, String, i64, i64, String)> = sqlx::query_as(
            "SELECT d.id, d.group_name, d.error, d.attempts, d.parked_at, m.envelope
             FROM bus_dead_letters d JOIN bus_messages m ON m.seq = d.seq
             ORDER BY d.id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await
        .map_err(StorageError::from)?;
        rows.into_iter()
            .map(|(id, group, error, attempts, parked_at, body)| {
                Ok(DeadLetter {
                    id: id.to_string(),
                    group,
                    envelope: parse(id, &body)?,
                    error,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    parked_at,
                })
            })
            .collect()
    }

    /// Makes the parked message pending again for its group, visible now, and drops the dead
    /// letter, in one transaction.
    ///
    /// # Errors
    /// [`BusError::Storage`].
    pub async fn replay_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(false);
        };
        let mut tx = self.db.begin().await?;
        let found: Option<(String, String, i64)> =
            sqlx::query_as("SELECT group_name, category, seq FROM bus_dead_letters WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StorageError::from)?;
        let Some((group, category, seq)) = found else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO bus_pending (group_name, category, seq, attempts, visible_at) VALUES ($1, $2, $3, 0, $4)
             ON CONFLICT (group_name, category, seq) DO UPDATE SET attempts = 0, visible_at = excluded.visible_at",
        )
        .bind(&group)
        .bind(&category)
        .bind(seq)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(StorageError::from)?;
        sqlx::query("DELETE FROM bus_dead_letters WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::from)?;
        tx.commit().await.map_err(StorageError::from)?;
        self.published.notify_waiters();
        Ok(true)
    }
}

/// A member of a consumer group on the embedded bus.
#[derive(Debug)]
pub struct EmbeddedConsumer {
    bus: EmbeddedBus,
    group: String,
    category: String,
}

impl EmbeddedConsumer {
    /// Claims up to `max` messages: first those of the group whose ack wait ran out or whose nak
    /// delay passed, then new ones after the group's cursor.
    ///
    /// # Errors
    /// [`BusError::Storage`].
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a publish between the look and the wait still wakes us.
            let published = self.bus.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            if self.claimable().await? {
                let claimed = self.claim(max).await?;
                if !claimed.is_empty() {
                    return Ok(claimed);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout(POLL.min(deadline - now), published).await;
        }
    }

    /// Messages after the cursor plus those claimed and not acknowledged.
    ///
    /// # Errors
    /// [`BusError::Storage`].
    pub async fn lag(&self) -> Result<u64, BusError> {
        let (unread, pending): (i64, i64) = sqlx::query_as(
            "SELECT
               (SELECT COUNT(*) FROM bus_messages WHERE category = $1 AND seq >
                  COALESCE((SELECT cursor FROM bus_groups WHERE group_name = $2 AND category = $3), 0)),
               (SELECT COUNT(*) FROM bus_pending WHERE group_name = $4 AND category = $5)",
        )
        .bind(&self.category)
        .bind(&self.group)
        .bind(&self.category)
        .bind(&self.group)
        .bind(&self.category)
        .fetch_one(self.bus.db.pool())
        .await
        .map_err(StorageError::from)?;
        Ok(u64::try_from(unread.saturating_add(pending)).unwrap_or(0))
    }

    /// A read-only look, so idle members polling the file do not queue for its write lock.
    async fn claimable(&self) -> Result<bool, BusError> {
        let (due, unread): (i64, i64) = sqlx::query_as(
            "SELECT
               EXISTS (SELECT 1 FROM bus_pending WHERE group_name = $1 AND category = $2 AND visible_at <= $3),
               EXISTS (SELECT 1 FROM bus_messages WHERE category = $4 AND seq >
                  COALESCE((SELECT cursor FROM bus_groups WHERE group_name = $5 AND category = $6), 0))",
        )
        .bind(&self.group)
        .bind(&self.category)
        .bind(now_millis())
        .bind(&self.category)
        .bind(&self.group)
        .bind(&self.category)
        .fetch_one(self.bus.db.pool())
        .await
        .map_err(StorageError::from)?;
        Ok(due != 0 || unread != 0)
    }

    async fn claim(&self, max: usize) -> Result<Vec<Delivery>, BusError> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let mut tx = self.bus.db.begin().await?;
        let now = now_millis();
        let invisible_until = now.saturating_add(self.bus.ack_wait_ms);

        let due: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT p.seq, p.attempts, m.envelope FROM bus_pending p JOIN bus_messages m ON m.seq = p.seq
             WHERE p.group_name = $1 AND p.category = $2 AND p.visible_at <= $3
             ORDER BY p.seq LIMIT $4",
        )
        .bind(&self.group)
        .bind(&self.category)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(StorageError::from)?;
        if let Some(&(last, _, _)) = due.last() {
            sqlx::query(
                "UPDATE bus_pending SET attempts = attempts + 1, visible_at = $1
                 WHERE group_name = $2 AND category = $3 AND visible_at <= $4 AND seq <= $5",
            )
            .bind(invisible_until)
            .bind(&self.group)
            .bind(&self.category)
            .bind(now)
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::from)?;
        }
        let mut claimed: Vec<(i64, i64, String)> = due
            .into_iter()
            .map(|(seq, attempts, body)| (seq, attempts.saturating_add(1), body))
            .collect();

        let room = limit.saturating_sub(i64::try_from(claimed.len()).unwrap_or(i64::MAX));
        if room > 0 {
            let cursor: i64 = sqlx::query_scalar(
                "SELECT COALESCE((SELECT cursor FROM bus_groups WHERE group_name = $1 AND category = $2), 0)",
            )
            .bind(&self.group)
            .bind(&self.category)
            .fetch_one(&mut *tx)
            .await
            .map_err(StorageError::from)?;
            let fresh: Vec<(i64, String)> = sqlx::query_as(
                "SELECT seq, envelope FROM bus_messages WHERE category = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(&self.category)
            .bind(cursor)
            .bind(room)
            .fetch_all(&mut *tx)
            .await
            .map_err(StorageError::from)?;
            if let Some(&(last, _)) = fresh.last() {
                sqlx::query(
                    "INSERT INTO bus_pending (group_name, category, seq, attempts, visible_at)
                     SELECT $1, $2, seq, 1, $3 FROM bus_messages WHERE category = $4 AND seq > $5 AND seq <= $6",
                )
                .bind(&self.group)
                .bind(&self.category)
                .bind(invisible_until)
                .bind(&self.category)
                .bind(cursor)
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(StorageError::from)?;
                sqlx::query(
                    "INSERT INTO bus_groups (group_name, category, cursor, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (group_name, category) DO UPDATE SET cursor = excluded.cursor",
                )
                .bind(&self.group)
                .bind(&self.category)
                .bind(last)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(StorageError::from)?;
            }
            claimed.extend(fresh.into_iter().map(|(seq, body)| (seq, 1, body)));
        }

        let mut deliveries = Vec::with_capacity(claimed.len());
        for (seq, attempts, body) in claimed {
            match parse(seq, &body) {
                Ok(envelope) => deliveries.push(Delivery {
                    envelope,
                    attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
                    handle: DeliveryHandle::Embedded(EmbeddedHandle {
                        db: self.bus.db.clone(),
                        group: self.group.clone(),
                        category: self.category.clone(),
                        seq,
                        attempts,
                    }),
                }),
                Err(error) => {
                    // Only a file edited by hand gets here; holding the row would block the group
                    // on it forever, and the log keeps the message for inspection.
                    tracing::error!(%error, seq, group = %self.group, "skipping unreadable bus message");
                    sqlx::query(
                        "DELETE FROM bus_pending WHERE group_name = $1 AND category = $2 AND seq = $3",
                    )
                    .bind(&self.group)
                    .bind(&self.category)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(StorageError::from)?;
                }
            }
        }
        tx.commit().await.map_err(StorageError::from)?;
        Ok(deliveries)
    }
}

/// A reader of one category's log from a position on. The log is written by one writer at a
/// time, so positions become visible in order and a cursor never skips a row.
#[derive(Debug)]
pub struct EmbeddedSubscription {
    bus: EmbeddedBus,
    category: String,
    cursor: i64,
    ready: VecDeque<Envelope>,
}

impl EmbeddedSubscription {
    /// The next event after the cursor, waiting for one as long as it takes.
    ///
    /// # Errors
    /// [`BusError::Storage`]; the cursor stays where it was, so a later call misses nothing.
    pub async fn next(&mut self) -> Result<Envelope, BusError> {
        loop {
            if let Some(envelope) = self.ready.pop_front() {
                return Ok(envelope);
            }
            let published = self.bus.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT seq, envelope FROM bus_messages WHERE category = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(&self.category)
            .bind(self.cursor)
            .bind(SUBSCRIPTION_BATCH)
            .fetch_all(self.bus.db.pool())
            .await
            .map_err(StorageError::from)?;
            for (seq, body) in rows {
                self.cursor = seq;
                match parse(seq, &body) {
                    Ok(envelope) => self.ready.push_back(envelope),
                    Err(error) => {
                        tracing::error!(%error, seq, "a subscription skips an unreadable bus message")
                    }
                }
            }
            if self.ready.is_empty() {
                let _ = tokio::time::timeout(POLL, published).await;
            }
        }
    }
}

/// One claim of one message. Every operation is fenced by the attempt it was claimed with: once the
/// ack wait has passed and another member re-claimed the message, this handle no longer touches
/// it, and the current holder decides.
#[derive(Debug)]
pub struct EmbeddedHandle {
    db: Db,
    group: String,
    category: String,
    seq: i64,
    attempts: i64,
}

impl EmbeddedHandle {
    /// # Errors
    /// [`BusError::Storage`]; the message comes again after the ack wait.
    pub async fn ack(self) -> Result<(), BusError> {
        sqlx::query(
            "DELETE FROM bus_pending WHERE group_name = $1 AND category = $2 AND seq = $3 AND attempts = $4",
        )
        .bind(&self.group)
        .bind(&self.category)
        .bind(self.seq)
        .bind(self.attempts)
        .execute(self.db.pool())
        .await
        .map_err(StorageError::from)?;
        Ok(())
    }

    /// # Errors
    /// [`BusError::Storage`]; the message comes again after the ack wait.
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE bus_pending SET visible_at = $1
             WHERE group_name = $2 AND category = $3 AND seq = $4 AND attempts = $5",
        )
        .bind(now_millis().saturating_add(delay_ms))
        .bind(&self.group)
        .bind(&self.category)
        .bind(self.seq)
        .bind(self.attempts)
        .execute(self.db.pool())
        .await
        .map_err(StorageError::from)?;
        Ok(())
    }

    /// Releases the claim and records the dead letter in one transaction; the envelope stays in
    /// the log, so only its position is stored.
    ///
    /// # Errors
    /// [`BusError::Storage`]; the message comes again after the ack wait.
    pub async fn park(self, _envelope: &Envelope, attempts: u32, error: &str) -> Result<(), BusError> {
        let mut tx = self.db.begin().await?;
        let released = sqlx::query(
            "DELETE FROM bus_pending WHERE group_name = $1 AND category = $2 AND seq = $3 AND attempts = $4",
        )
        .bind(&self.group)
        .bind(&self.category)
        .bind(self.seq)
        .bind(self.attempts)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::from)?
        .rows_affected();
        if released == 1 {
            sqlx::query(
                "INSERT INTO bus_dead_letters (group_name, category, seq, error, attempts, parked_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&self.group)
            .bind(&self.category)
            .bind(self.seq)
            .bind(truncate(error, MAX_ERROR_BYTES))
            .bind(i64::from(attempts))
            .bind(now_millis())
            .execute(&mut *tx)
            .await
            .map_err(StorageError::from)?;
        }
        tx.commit().await.map_err(StorageError::from)?;
        Ok(())
    }
}

fn parse(position: i64, body: &str) -> Result<Envelope, BusError> {
    serde_json::from_str(body).map_err(|e| BusError::Malformed {
        id: format!("bus message {position}"),
        reason: e.to_string(),
    })
}

/// The same rule as NATS subject tokens, so an event the embedded bus takes NATS takes too.
fn check_category(envelope: &Envelope) -> Result<(), BusError> {
    let category = envelope.category();
    let ok = !category.is_empty()
        && category.len() <= 64
        && category != "dlq"
        && category
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(BusError::Malformed {
            id: envelope.id.clone(),
            reason: format!("category {category:?} must be 1-64 of [A-Za-z0-9_-] and not \"dlq\""),
        })
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("aéb", 2), "a");
        assert_eq!(truncate("aéb", 3), "aé");
    }

    #[test]
    fn categories_that_are_not_subject_tokens_are_refused() {
        let mut envelope = Envelope {
            id: "e-1".into(),
            event_type: "T".into(),
            schema_version: 1,
            source: "identity".into(),
            stream_id: "s".into(),
            stream_seq: 1,
            occurred_at: 0,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            payload: serde_json::json!({}),
        };
        assert!(check_category(&envelope).is_ok());
        for bad in ["", "a.b", "a*", "dlq", "has space"] {
            envelope.source = bad.into();
            assert!(check_category(&envelope).is_err(), "{bad:?} accepted");
        }
    }
}
