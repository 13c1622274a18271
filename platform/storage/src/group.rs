//! Group commit on SQLite: the process's write transactions share physical transactions.
//!
//! SQLite admits one writer per file and, with `synchronous = FULL`, every `COMMIT` waits for an
//! `fsync`. Writers of the process queue for the one writer connection (a fair lock); each
//! logical transaction runs inside a `SAVEPOINT` of the physical transaction that connection
//! has open, so a logical rollback is `ROLLBACK TO` its savepoint and leaves the others' work.
//! A logical commit releases its savepoint and returns only once the physical `COMMIT` of the
//! group containing it has returned: its data is as durable as with a transaction of its own.
//! The group commits as soon as no other writer is queued when a member ends, or when a task
//! queued behind the writers that were waiting gets its turn, so under load one `fsync` serves
//! every transaction that queued during the previous one, and an idle writer commits at once.
//!
//! A failed physical `COMMIT` fails every member of the group, and none of its work is kept.
//! Members never interleave (savepoints are a stack): one holds the connection from its begin
//! to its end. Work that ends the group or cleans up after a member runs in spawned tasks, so a
//! caller that stops waiting (a dropped future) never leaves the connection half-way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor as _};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::error::StorageError;

/// Members past which a group commits even with writers still queued, so that a long queue
/// does not hold every member's reply for one very long group.
const MAX_MEMBERS: usize = 512;

/// What every member of a group learns when it ends: `None` while it is open.
type Outcome = Option<Result<(), Failure>>;

/// Why a group's work was not kept, shared by all its members.
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    transient: bool,
}

impl Failure {
    fn of(error: &sqlx::Error) -> Self {
        Self {
            message: error.to_string(),
            transient: crate::error::is_transient(error),
        }
    }
}

impl From<Failure> for StorageError {
    fn from(failure: Failure) -> Self {
        Self::CommitFailed {
            message: failure.message,
            transient: failure.transient,
        }
    }
}

/// Commits counted for `/metrics`: logical transactions, and the physical commits that made them
/// durable (on SQLite one `fsync` each with `synchronous = FULL`).
#[derive(Debug, Clone, Default)]
pub struct CommitCounters {
    pub transactions: Counter,
    pub commits: Counter,
}

/// The open physical transaction and who waits for it.
#[derive(Debug)]
struct Group {
    id: u64,
    outcome: watch::Sender<Outcome>,
    /// Members that released their savepoint and wait for the physical commit.
    committed: usize,
    /// A task is queued for the writer to end this group.
    finisher: bool,
}

/// What the process's write lock guards.
#[derive(Debug, Default)]
struct Writer {
    connection: Option<PoolConnection<Any>>,
    group: Option<Group>,
    /// A member's savepoint is open: while a member holds the lock, or, once the lock is free
    /// again, a member that was dropped without ending, whose work the next holder rolls back.
    member_open: bool,
}

/// The one writer connection of a SQLite database and the groups committed through it.
#[derive(Debug)]
pub(crate) struct Committer {
    writer: Arc<Mutex<Writer>>,
    /// The pool of one connection the writer's connection comes from.
    pool: AnyPool,
    /// Writers queued for the lock: while any is, a member that ends leaves the group open.
    queued: AtomicUsize,
    next_group: AtomicU64,
    acquire_timeout: Duration,
    counters: CommitCounters,
}

impl Committer {
    pub(crate) fn new(pool: AnyPool, acquire_timeout: Duration, counters: CommitCounters) -> Self {
        Self {
            writer: Arc::new(Mutex::new(Writer::default())),
            pool,
            queued: AtomicUsize::new(0),
            next_group: AtomicU64::new(0),
            acquire_timeout,
            counters,
        }
    }

    /// Writers waiting for their turn right now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Waits for the writer (first come, first served, at most `acquire_timeout`), joins the
    /// open group or begins one, and opens the member's savepoint.
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<Member, StorageError> {
        let committer = Arc::clone(self);
        // In a task of its own: a caller that gives up while the lock is being taken or the
        // savepoint opened drops a finished `Member`, whose drop cleans up, never a half-begun one.
        let task = tokio::spawn(async move {
            let guard = {
                let _queued = Queued::new(&committer.queued);
                tokio::time::timeout(
                    committer.acquire_timeout,
                    Arc::clone(&committer.writer).lock_owned(),
                )
                .await
                // Waiting for the writer's turn is waiting for the write lock: busy, as
                // SQLITE_BUSY would be, not a database out of reach.
                .map_err(|_| StorageError::Transient(sqlx::Error::PoolTimedOut))?
            };
            let mut member = Member {
                guard: Some(guard),
                outcome: None,
                committer: Arc::clone(&committer),
            };
            let writer = member.guard.as_mut().expect("just taken");
            member.outcome = Some(committer.open(writer).await?);
            Ok(member)
        });
        task.await.map_err(|e| {
            StorageError::Database(sqlx::Error::Protocol(format!("beginning a transaction: {e}")))
        })?
    }

    /// Settles what a dropped member left, begins a physical transaction if none is open and
    /// opens a savepoint in it.
    async fn open(&self, writer: &mut Writer) -> Result<watch::Receiver<Outcome>, StorageError> {
        self.settle(writer).await;
        if writer.connection.is_none() {
            writer.connection = Some(self.pool.acquire().await?);
        }
        let connection = writer.connection.as_deref_mut().expect("acquired above");
        if writer.group.is_none() {
            // One round trip to the connection's thread for both: each costs two context switches.
            if let Err(e) = connection
                .execute(sqlx::raw_sql("BEGIN IMMEDIATE; SAVEPOINT mercato_member"))
                .await
            {
                // The begin may have taken effect before the savepoint failed: no group holds
                // that transaction, so it goes (harmlessly refused when the begin failed).
                let _ = connection.execute("ROLLBACK").await;
                return Err(e.into());
            }
            writer.group = Some(Group {
                id: self.next_group.fetch_add(1, Ordering::Relaxed),
                outcome: watch::Sender::new(None),
                committed: 0,
                finisher: false,
            });
        } else {
            connection.execute("SAVEPOINT mercato_member").await?;
        }
        writer.member_open = true;
        Ok(writer.group.as_ref().expect("opened above").outcome.subscribe())
    }

    /// Rolls back the savepoint of a member that was dropped while it held the writer.
    async fn settle(&self, writer: &mut Writer) {
        if !writer.member_open {
            return;
        }
        writer.member_open = false;
        let Some(connection) = writer.connection.as_deref_mut() else {
            return;
        };
        let rolled_back = connection
            .execute(sqlx::raw_sql(
                "ROLLBACK TO mercato_member; RELEASE mercato_member",
            ))
            .await;
        if let Err(e) = rolled_back {
            // The savepoint is gone: SQLite rolled the whole transaction back after an error
            // (a full disk, an I/O error), so the group's work is gone too.
            self.fail(writer, &e).await;
        }
    }

    /// Ends the open group after an error that left its transaction in doubt: rolls back what
    /// remains and fails every member.
    async fn fail(&self, writer: &mut Writer, error: &sqlx::Error) {
        let Some(group) = writer.group.take() else {
            return;
        };
        if let Some(connection) = writer.connection.as_deref_mut() {
            // Fails harmlessly ("no transaction is active") when SQLite already rolled back.
            let _ = connection.execute("ROLLBACK").await;
        }
        tracing::warn!(error = %error, members = group.committed, "group transaction failed");
        group.outcome.send_replace(Some(Err(Failure::of(error))));
    }

    /// Commits the open group (or rolls it back when no member kept anything) and tells every
    /// member how it went.
    async fn finish(&self, writer: &mut Writer) {
        let Some(group) = writer.group.take() else {
            return;
        };
        let connection = writer
            .connection
            .as_deref_mut()
            .expect("an open group has its connection");
        if group.committed == 0 {
            let _ = connection.execute("ROLLBACK").await;
            group.outcome.send_replace(Some(Ok(())));
            return;
        }
        self.commit(connection, group, "COMMIT").await;
    }

    /// Runs `commit` (a `COMMIT`, after what must come before it) for `group` and tells every
    /// member how it went.
    async fn commit(&self, connection: &mut AnyConnection, group: Group, commit: &'static str) {
        let outcome = match connection.execute(sqlx::raw_sql(commit)).await {
            Ok(_) => {
                self.counters.commits.inc();
                self.counters.transactions.inc_by(group.committed as u64);
                Ok(())
            }
            Err(e) => {
                // A COMMIT refused by a deferred constraint leaves the transaction open; an I/O
                // error (or a failed release before it) may have rolled it back already. Either
                // way nothing of it is kept.
                let _ = connection.execute("ROLLBACK").await;
                tracing::warn!(error = %e, members = group.committed, "group commit failed");
                Err(Failure::of(&e))
            }
        };
        group.outcome.send_replace(Some(outcome));
    }

    /// Releases the savepoint of the member holding the writer and commits its group with it, as
    /// a release and then [`Committer::finish`] would, in one round trip; a failure of either
    /// fails the whole group, as [`Committer::fail`] or `finish` would.
    async fn release_and_commit(&self, writer: &mut Writer) {
        let Some(mut group) = writer.group.take() else {
            return;
        };
        group.committed += 1;
        let connection = writer
            .connection
            .as_deref_mut()
            .expect("an open group has its connection");
        self.commit(connection, group, "RELEASE mercato_member; COMMIT")
            .await;
    }

    /// Ends the group now if nobody is queued to join it, else frees the writer for the next in
    /// line and queues a task behind them to end the group.
    async fn end_or_pass(self: &Arc<Self>, mut guard: OwnedMutexGuard<Writer>) {
        let full = guard.group.as_ref().is_some_and(|g| g.committed >= MAX_MEMBERS);
        if self.queued() == 0 || full {
            self.finish(&mut guard).await;
            drop(guard);
        } else {
            self.pass(guard);
        }
    }

    /// Frees the writer, making sure a task will end the open group.
    fn pass(self: &Arc<Self>, mut guard: OwnedMutexGuard<Writer>) {
        let finish = match guard.group.as_mut() {
            Some(group) if !group.finisher => {
                group.finisher = true;
                Some(group.id)
            }
            _ => None,
        };
        drop(guard);
        if let Some(id) = finish
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let committer = Arc::clone(self);
            runtime.spawn(async move { committer.finish_group(id).await });
        }
        // Without a runtime (a member dropped outside one) the next writer settles and the
        // group ends with the next member's commit.
    }

    /// Queued behind the writers that were waiting when it was spawned: they joined the group,
    /// now it commits.
    async fn finish_group(&self, id: u64) {
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        self.settle(&mut writer).await;
        if writer.group.as_ref().is_some_and(|g| g.id == id) {
            self.finish(&mut writer).await;
        }
    }

    /// Ends any open group and gives the connection back to its pool, so the pool can close.
    pub(crate) async fn close(&self) {
        let mut writer = self.writer.lock().await;
        self.settle(&mut writer).await;
        self.finish(&mut writer).await;
        writer.connection = None;
        drop(writer);
        self.pool.close().await;
    }
}

/// Counts a writer queued for the lock for as long as it waits, also when it gives up.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One logical transaction in a group: it holds the writer until it commits or rolls back.
#[derive(Debug)]
pub(crate) struct Member {
    guard: Option<OwnedMutexGuard<Writer>>,
    outcome: Option<watch::Receiver<Outcome>>,
    committer: Arc<Committer>,
}

impl Member {
    pub(crate) fn connection(&self) -> &AnyConnection {
        self.guard
            .as_ref()
            .and_then(|g| g.connection.as_deref())
            .expect("a member holds the writer's connection until it ends")
    }

    pub(crate) fn connection_mut(&mut self) -> &mut AnyConnection {
        self.guard
            .as_mut()
            .and_then(|g| g.connection.as_deref_mut())
            .expect("a member holds the writer's connection until it ends")
    }

    /// Releases the savepoint and waits for the group's physical commit.
    pub(crate) async fn commit(mut self) -> Result<(), StorageError> {
        let guard = self.guard.take().expect("a member ends once");
        let mut outcome = self
            .outcome
            .take()
            .expect("a begun member has its group's outcome");
        let committer = Arc::clone(&self.committer);
        // The release and the group's end run to completion even if this caller stops waiting.
        tokio::spawn(async move {
            let mut guard = guard;
            guard.member_open = false;
            if committer.queued() == 0 {
                // Nobody waits to join: the group ends with this member, in one round trip.
                committer.release_and_commit(&mut guard).await;
                return;
            }
            let connection = guard.connection.as_deref_mut().expect("held by the member");
            match connection.execute("RELEASE mercato_member").await {
                Ok(_) => {
                    if let Some(group) = guard.group.as_mut() {
                        group.committed += 1;
                    }
                    committer.end_or_pass(guard).await;
                }
                Err(e) => {
                    // The savepoint is gone, so SQLite rolled the whole transaction back after
                    // an error in it: the group failed, this member with it.
                    committer.fail(&mut guard, &e).await;
                }
            }
        });
        match outcome.wait_for(Option::is_some).await {
            Ok(result) => result
                .clone()
                .expect("waited for Some")
                .map_err(StorageError::from),
            Err(_) => Err(StorageError::CommitFailed {
                message: "the database closed before the transaction's group committed".into(),
                transient: false,
            }),
        }
    }

    /// Rolls back to the member's savepoint; the rest of the group is untouched.
    pub(crate) async fn rollback(mut self) {
        let guard = self.guard.take().expect("a member ends once");
        let committer = Arc::clone(&self.committer);
        let task = tokio::spawn(async move {
            let mut guard = guard;
            committer.settle(&mut guard).await;
            committer.end_or_pass(guard).await;
        });
        // The rollback is done when the task is; a task that panicked has dropped the lock and
        // the next writer settles what it left.
        let _ = task.await;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Dropped without commit or rollback: the savepoint stays marked open, and whoever
        // takes the writer next rolls it back; a task is queued to do it if nobody comes.
        if let Some(guard) = self.guard.take() {
            self.committer.pass(guard);
        }
    }
}
