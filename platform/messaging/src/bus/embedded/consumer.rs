//! Consumer groups on the embedded bus: claiming messages for a group member, and the
//! deliveries that acknowledge, delay or release them. A claim names this process's run and is
//! kept while its delivery is in hand (see `runs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mercato_storage::sqlx;
use mercato_storage::{Db, StorageError, now_millis};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::runs::Claim;
use super::{EmbeddedBus, POLL, parse};
use crate::bus::in_hand::Held;
use crate::bus::{BusError, ConsumerSpec, Delivery, DeliveryHandle};

impl EmbeddedBus {
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
            wake: self.wakers.register(&spec.category, &spec.event_types),
            bus: self.clone(),
            group: spec.group.clone(),
            category: spec.category.clone(),
            event_types: spec.event_types.clone(),
        })
    }
}

/// A member of a consumer group on the embedded bus (a clone is another handle on the same
/// member's claims).
#[derive(Debug, Clone)]
pub struct EmbeddedConsumer {
    pub(super) bus: EmbeddedBus,
    pub(super) group: String,
    pub(super) category: String,
    /// Empty for every type.
    event_types: Vec<String>,
    /// Notified when this process publishes a message of the group's category and types.
    wake: Arc<Notify>,
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
        let mut waiting = None;
        // Woken by a publish of what the group reads: there is something to claim, so the
        // read-only look first would be a wasted round trip.
        let mut announced = false;
        loop {
            // Registered before looking, so a publish between the look and the wait still wakes us.
            let published = self.wake.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            if announced || self.claimable().await? {
                let claimed = self.claim(max).await?;
                if !claimed.is_empty() {
                    return Ok(claimed);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            waiting.get_or_insert_with(|| Waiting::enter(&self.bus.waiting));
            announced = tokio::time::timeout(POLL.min(deadline - now), published)
                .await
                .is_ok();
        }
    }

    /// Messages after the cursor plus those claimed and not acknowledged.
    ///
    /// # Errors
    /// [`BusError::Storage`].
    pub async fn lag(&self) -> Result<u64, BusError> {
        let sql = format!(
            "SELECT
               (SELECT COUNT(*) FROM bus_messages WHERE category = $1 AND seq >
                  COALESCE((SELECT cursor FROM bus_groups WHERE group_name = $2 AND category = $3), 0){}),
               (SELECT COUNT(*) FROM bus_pending WHERE group_name = $4 AND category = $5)",
            type_filter(&self.event_types, 6)
        );
        let mut query = sqlx::query_as(&sql)
            .bind(&self.category)
            .bind(&self.group)
            .bind(&self.category)
            .bind(&self.group)
            .bind(&self.category);
        for event_type in &self.event_types {
            query = query.bind(event_type);
        }
        let (unread, pending): (i64, i64) = query
            .fetch_one(self.bus.db.pool())
            .await
            .map_err(StorageError::from)?;
        Ok(u64::try_from(unread.saturating_add(pending)).unwrap_or(0))
    }

    /// A read-only look, so idle members polling the file do not queue for its write lock.
    async fn claimable(&self) -> Result<bool, BusError> {
        let sql = format!(
            "SELECT
               EXISTS (SELECT 1 FROM bus_pending WHERE group_name = $1 AND category = $2 AND visible_at <= $3),
               EXISTS (SELECT 1 FROM bus_messages WHERE category = $4 AND seq >
                  COALESCE((SELECT cursor FROM bus_groups WHERE group_name = $5 AND category = $6), 0){})",
            type_filter(&self.event_types, 7)
        );
        let mut query = sqlx::query_as(&sql)
            .bind(&self.group)
            .bind(&self.category)
            .bind(now_millis())
            .bind(&self.category)
            .bind(&self.group)
            .bind(&self.category);
        for event_type in &self.event_types {
            query = query.bind(event_type);
        }
        let (due, unread): (i64, i64) = query
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
                "UPDATE bus_pending SET attempts = attempts + 1, visible_at = $1, run_id = $2
                 WHERE group_name = $3 AND category = $4 AND visible_at <= $5 AND seq <= $6",
            )
            .bind(invisible_until)
            .bind(&*self.bus.run.id)
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
            // The cursor moves to the last claimed message, so the skipped types before it are
            // passed for good. It is read where it is used: this transaction holds the write
            // lock, so both statements see the same cursor.
            let sql = format!(
                "SELECT seq, envelope FROM bus_messages WHERE category = $1 AND seq > {CURSOR}{} ORDER BY seq LIMIT $4",
                type_filter(&self.event_types, 5)
            );
            let mut query = sqlx::query_as(&sql)
                .bind(&self.category)
                .bind(&self.group)
                .bind(&self.category)
                .bind(room);
            for event_type in &self.event_types {
                query = query.bind(event_type);
            }
            let fresh: Vec<(i64, String)> = query.fetch_all(&mut *tx).await.map_err(StorageError::from)?;
            if let Some(&(last, _)) = fresh.last() {
                let sql = format!(
                    "INSERT INTO bus_pending (group_name, category, seq, attempts, visible_at, run_id)
                     SELECT $1, $2, seq, 1, $3, $4 FROM bus_messages
                     WHERE category = $5 AND seq > {} AND seq <= $8{}",
                    CURSOR.replace("$2", "$6").replace("$3", "$7"),
                    type_filter(&self.event_types, 9)
                );
                let mut query = sqlx::query(&sql)
                    .bind(&self.group)
                    .bind(&self.category)
                    .bind(invisible_until)
                    .bind(&*self.bus.run.id)
                    .bind(&self.category)
                    .bind(&self.group)
                    .bind(&self.category)
                    .bind(last);
                for event_type in &self.event_types {
                    query = query.bind(event_type);
                }
                query.execute(&mut *tx).await.map_err(StorageError::from)?;
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

        let mut parsed = Vec::with_capacity(claimed.len());
        for (seq, attempts, body) in claimed {
            match parse(seq, &body) {
                Ok(envelope) => parsed.push((seq, attempts, envelope)),
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
        tx.commit().await?;
        // In hand only once committed: the keeper renews claims that exist.
        Ok(parsed
            .into_iter()
            .map(|(seq, attempts, envelope)| Delivery {
                envelope,
                attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
                handle: DeliveryHandle::Embedded(self.handle(seq, attempts)),
            })
            .collect())
    }

    fn handle(&self, seq: i64, attempts: i64) -> EmbeddedHandle {
        let claim = Claim {
            group: self.group.clone(),
            category: self.category.clone(),
            seq,
            attempts,
        };
        EmbeddedHandle {
            db: self.bus.db.clone(),
            held: self.bus.run.in_hand.hold(claim.clone()),
            claim,
        }
    }
}

/// One claim of one message, kept while the handle lives. Every operation is fenced by the
/// attempt it was claimed with: once the claim lapsed and another member re-claimed the message,
/// this handle no longer touches it, and the current holder decides.
#[derive(Debug)]
pub struct EmbeddedHandle {
    pub(super) db: Db,
    pub(super) claim: Claim,
    /// Dropped with the handle: a claim nobody holds is no longer kept and lapses.
    pub(super) held: Held<Claim>,
}

impl EmbeddedHandle {
    /// # Errors
    /// [`BusError::Storage`]; the message comes again after the ack wait.
    pub async fn ack(self) -> Result<(), BusError> {
        let Self { db, claim, held } = self;
        drop(held);
        // A write transaction shares the commit of the writes queued with it (see `ack_all`).
        let mut tx = db.begin().await?;
        sqlx::query(
            "DELETE FROM bus_pending WHERE group_name = $1 AND category = $2 AND seq = $3 AND attempts = $4",
        )
        .bind(&claim.group)
        .bind(&claim.category)
        .bind(claim.seq)
        .bind(claim.attempts)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::from)?;
        tx.commit().await?;
        Ok(())
    }

    /// The message becomes visible again after `delay`, claimed by no run.
    ///
    /// # Errors
    /// [`BusError::Storage`]; the message comes again after the ack wait.
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        let Self { db, claim, held } = self;
        drop(held);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let mut tx = db.begin().await?;
        sqlx::query(
            "UPDATE bus_pending SET visible_at = $1, run_id = NULL
             WHERE group_name = $2 AND category = $3 AND seq = $4 AND attempts = $5",
        )
        .bind(now_millis().saturating_add(delay_ms))
        .bind(&claim.group)
        .bind(&claim.category)
        .bind(claim.seq)
        .bind(claim.attempts)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::from)?;
        tx.commit().await?;
        Ok(())
    }
}

/// The group's cursor, for a statement that binds the group as `$2` and the category as `$3`.
const CURSOR: &str = "COALESCE((SELECT cursor FROM bus_groups WHERE group_name = $2 AND category = $3), 0)";

/// ` AND event_type IN ($first, …)` for a group of some types; nothing for a group of all.
fn type_filter(event_types: &[String], first: usize) -> String {
    if event_types.is_empty() {
        return String::new();
    }
    let placeholders: Vec<String> = (first..first + event_types.len())
        .map(|i| format!("${i}"))
        .collect();
    format!(" AND event_type IN ({})", placeholders.join(", "))
}

/// Counts a fetch among the waiting ones for as long as it is held, including when the fetch is
/// dropped mid-wait.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
