//! Runs of the embedded bus: every open bus (one per process in `mercato up`, but `mercato dlq`
//! and tests open the same file beside it) is a run with a lease in `bus_members`, and every
//! claim names the run that made it.
//!
//! A run renews its lease every second, and with it the claims it has in hand (so a short ack
//! wait never lapses for work still held). The same pass releases the claims of every run whose
//! lease has lapsed: after a crash and a restart, what the dead process held is visible again a
//! few seconds later instead of after the ack wait. A live run's claims are never released, so
//! two processes on one file never hold a message at once.

use std::sync::Arc;
use std::time::Duration;

use mercato_storage::sqlx;
use mercato_storage::{Db, StorageError, now_millis};

use super::wakers::Wakers;
use crate::bus::BusError;
use crate::bus::in_hand::{InHand, Keeper, renewal_interval};

/// How long a run counts as alive after its last renewal: a few renewals, so a busy moment does
/// not end a live run, yet short against the saga's step deadlines.
const LEASE_MS: i64 = 3_000;

/// The longest gap between renewals.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// One claim in hand, as the fencing of every statement on it names it.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) group: String,
    pub(super) category: String,
    pub(super) seq: i64,
    pub(super) attempts: i64,
}

/// This process's run on the bus file; its keeper stops when the bus's last clone goes.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) id: Arc<str>,
    pub(super) in_hand: Arc<InHand<Claim>>,
    _keeper: Keeper,
}

impl Run {
    /// Joins the members, releasing the claims of runs whose lease has lapsed, and starts
    /// renewing.
    pub(super) async fn start(db: Db, ack_wait_ms: i64, wakers: Arc<Wakers>) -> Result<Self, BusError> {
        let lease = Lease {
            db,
            id: uuid::Uuid::new_v4().to_string().into(),
            in_hand: InHand::new(),
            ack_wait_ms,
            wakers,
        };
        lease.renew().await?;
        let ack_wait = Duration::from_millis(u64::try_from(ack_wait_ms).unwrap_or(u64::MAX));
        let every = renewal_interval(ack_wait).min(RENEW_EVERY);
        Ok(Self {
            id: Arc::clone(&lease.id),
            in_hand: Arc::clone(&lease.in_hand),
            _keeper: Keeper::spawn(lease.keep(every)),
        })
    }
}

struct Lease {
    db: Db,
    id: Arc<str>,
    in_hand: Arc<InHand<Claim>>,
    ack_wait_ms: i64,
    wakers: Arc<Wakers>,
}

impl Lease {
    async fn keep(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(error) = self.renew().await {
                // The lease outlasts a few failed renewals; the next tick tries again.
                tracing::warn!(%error, run = %self.id, "cannot renew the bus lease");
            }
        }
    }

    /// One write transaction: the lease, the claims in hand, and the release of dead runs' claims.
    async fn renew(&self) -> Result<(), BusError> {
        let mut tx = self.db.begin().await?;
        let now = now_millis();
        sqlx::query(
            "INSERT INTO bus_members (run_id, expires_at) VALUES ($1, $2)
             ON CONFLICT (run_id) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(&*self.id)
        .bind(now.saturating_add(LEASE_MS))
        .execute(&mut *tx)
        .await
        .map_err(StorageError::from)?;
        let held_until = now.saturating_add(self.ack_wait_ms);
        for claim in self.in_hand.items() {
            sqlx::query(
                "UPDATE bus_pending SET visible_at = $1
                 WHERE group_name = $2 AND category = $3 AND seq = $4 AND attempts = $5 AND run_id = $6",
            )
            .bind(held_until)
            .bind(&claim.group)
            .bind(&claim.category)
            .bind(claim.seq)
            .bind(claim.attempts)
            .bind(&*self.id)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::from)?;
        }
        let released = sqlx::query(
            "UPDATE bus_pending SET visible_at = $1, run_id = NULL
             WHERE run_id IS NOT NULL
               AND run_id NOT IN (SELECT run_id FROM bus_members WHERE expires_at > $2)",
        )
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::from)?
        .rows_affected();
        sqlx::query("DELETE FROM bus_members WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::from)?;
        tx.commit().await?;
        if released > 0 {
            tracing::info!(released, run = %self.id, "released the claims of bus runs that are gone");
            self.wakers.all();
        }
        Ok(())
    }
}
