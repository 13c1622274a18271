//! Group commit on SQLite: write transactions queued for the writer share one physical commit,
//! each keeps or loses only its own work, and a failed commit fails every member.
//!
//! A group is formed deterministically: one transaction holds the writer while the others queue
//! (`Db::writers_queued` says when they all have), then it commits; each queued member ends as
//! it gets its turn, and the last one, finding nobody queued, commits the group.

use std::time::Duration;

use mercato_storage::{Db, StorageError, Tx};
use mercato_testkit::{TestBackend, TestDatabase};
use tokio::task::JoinSet;

use crate::support::{PATIENCE, bump, connect, count, execute, fresh, join_all};

mercato_testkit::backend_tests!(
    concurrent_writers_that_sometimes_roll_back_keep_exactly_the_committed_work,
    a_commit_is_visible_to_every_reader_once_it_returns,
);

/// What a queued member does in its turn.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Commit,
    /// A statement fails (a duplicate key); the member goes on and commits the rest.
    FailAStatementThenCommit,
    RollBack,
    /// Dropped without commit or rollback, as when its caller gives up.
    Abandon,
}

async fn insert(tx: &mut Tx, n: i64) -> Result<(), StorageError> {
    sqlx::query("INSERT INTO notes (n) VALUES ($1)")
        .bind(n)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Begins, writes `n` (and `n + 1000` for a member that fails a statement) and ends as `plan`
/// says; the commit's result, or `Ok` for the plans that do not commit.
async fn member(db: Db, n: i64, plan: Plan) -> Result<(), StorageError> {
    let mut tx = db.begin().await?;
    insert(&mut tx, n).await?;
    match plan {
        Plan::Commit => tx.commit().await,
        Plan::FailAStatementThenCommit => {
            let duplicate = insert(&mut tx, n).await;
            assert!(
                duplicate.as_ref().is_err_and(StorageError::is_conflict),
                "{duplicate:?}"
            );
            insert(&mut tx, n + 1000).await?;
            tx.commit().await
        }
        Plan::RollBack => tx.rollback().await,
        Plan::Abandon => {
            drop(tx);
            Ok(())
        }
    }
}

/// Polls until `n` writers are queued for the writer.
async fn until_queued(db: &Db, n: usize) {
    tokio::time::timeout(PATIENCE, async {
        while db.writers_queued() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} writers queued"));
}

/// Holds the writer with a transaction that wrote `0`, queues a member per plan (writing 1,
/// 2, …), then commits the holder; the holder's and every member's results in that order.
async fn group(db: &Db, plans: &[Plan]) -> Vec<Result<(), StorageError>> {
    let mut holder = db.begin().await.expect("begin");
    insert(&mut holder, 0).await.expect("insert");
    let mut members = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let n = i64::try_from(i).unwrap() + 1;
        members.push(tokio::spawn(member(db.clone(), n, *plan)));
        // One at a time, so that they queue in this order.
        until_queued(db, i + 1).await;
    }
    let mut results = vec![holder.commit().await];
    for task in members {
        results.push(task.await.expect("no panic"));
    }
    results
}

async fn notes(db: &Db) -> Vec<i64> {
    sqlx::query_scalar("SELECT n FROM notes ORDER BY n")
        .fetch_all(db.pool())
        .await
        .expect("read notes")
}

async fn sqlite_notes() -> (TestDatabase, Db) {
    let (test_db, db) = fresh(TestBackend::Sqlite).await;
    execute(&db, "CREATE TABLE notes (n BIGINT PRIMARY KEY)").await;
    (test_db, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_transactions_commit_together_in_one_physical_commit() {
    let (_test_db, db) = sqlite_notes().await;
    let (transactions, commits) = db.commit_counts();

    let results = group(&db, &[Plan::Commit; 5]).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(notes(&db).await, [0, 1, 2, 3, 4, 5]);
    let (transactions_after, commits_after) = db.commit_counts();
    assert_eq!(transactions_after - transactions, 6);
    assert_eq!(commits_after - commits, 1, "one physical commit for the six");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_fails_rolls_back_or_is_dropped_loses_only_its_own_work() {
    let (_test_db, db) = sqlite_notes().await;
    let (_, commits) = db.commit_counts();

    let results = group(
        &db,
        &[
            Plan::FailAStatementThenCommit,
            Plan::RollBack,
            Plan::Commit,
            Plan::Abandon,
        ],
    )
    .await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // 1 and its 1001 kept (its failed statement alone undone), 2 rolled back, 3 kept, 4 dropped.
    assert_eq!(notes(&db).await, [0, 1, 3, 1001]);
    assert_eq!(
        db.commit_counts().1 - commits,
        1,
        "one physical commit for the group"
    );

    let mut tx = db
        .begin()
        .await
        .expect("the writer is free after a dropped member");
    insert(&mut tx, 5).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(notes(&db).await, [0, 1, 3, 5, 1001]);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_commit_fails_every_member_and_keeps_none_of_their_work() {
    let (_test_db, db) = sqlite_notes().await;
    // A deferred foreign key is checked at COMMIT only: a member that breaks it makes the
    // group's physical commit fail, after every member released its savepoint.
    execute(
        &db,
        "CREATE TABLE parents (id BIGINT PRIMARY KEY);
         CREATE TABLE children (id BIGINT PRIMARY KEY,
             parent BIGINT NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await;
    let mut holder = db.begin().await.unwrap();
    insert(&mut holder, 0).await.unwrap();
    let orphan = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await?;
            sqlx::query("INSERT INTO children (id, parent) VALUES (1, 99)")
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
    });
    until_queued(&db, 1).await;
    let bystander = tokio::spawn(member(db.clone(), 1, Plan::Commit));
    until_queued(&db, 2).await;

    let holder = holder.commit().await;
    let orphan = orphan.await.unwrap();
    let bystander = bystander.await.unwrap();

    for result in [&holder, &orphan, &bystander] {
        assert!(
            matches!(result, Err(StorageError::CommitFailed { .. })),
            "every member fails: {result:?}"
        );
    }
    assert!(notes(&db).await.is_empty(), "nothing of the group is kept");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM children").await, 0);

    // The writer starts a fresh group afterwards.
    let mut tx = db.begin().await.unwrap();
    insert(&mut tx, 7).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(notes(&db).await, [7]);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_alone_commits_at_once() {
    let (_test_db, db) = sqlite_notes().await;
    let (_, commits) = db.commit_counts();
    for n in 0..3 {
        let mut tx = db.begin().await.unwrap();
        insert(&mut tx, n).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(db.commit_counts().1 - commits, u64::try_from(n).unwrap() + 1);
    }
    db.close().await;
}

/// Reads the counter, writes it plus one and appends that value to a log whose key refuses a
/// repeat; every third rolls back instead. The value written if it committed.
async fn increment(db: &Db, round: i64) -> Option<i64> {
    let mut tx = db.begin().await.expect("begin");
    let n = bump(&mut tx).await;
    sqlx::query("INSERT INTO increments (n) VALUES ($1)")
        .bind(n)
        .execute(&mut *tx)
        .await
        .expect("log");
    if round % 3 == 2 {
        tx.rollback().await.expect("rollback");
        return None;
    }
    tx.commit().await.expect("commit");
    Some(n)
}

/// Many writers at once. On PostgreSQL the read-then-write would race under READ COMMITTED, so
/// there the writers lock the row first (`FOR UPDATE`); on SQLite the writer's queue serialises
/// them.
async fn concurrent_writers_that_sometimes_roll_back_keep_exactly_the_committed_work(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;
    execute(
        &db,
        "CREATE TABLE counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
    )
    .await;
    execute(&db, "CREATE TABLE increments (n BIGINT PRIMARY KEY)").await;
    execute(&db, "INSERT INTO counter (id, n) VALUES (1, 0)").await;
    let (transactions, _) = db.commit_counts();
    let mut tasks = JoinSet::new();
    for writer in 0..16_i64 {
        let db = db.clone();
        tasks.spawn(async move {
            let mut written = Vec::new();
            for round in 0..12_i64 {
                if let Some(n) = increment(&db, writer + round).await {
                    written.push(n);
                }
            }
            written
        });
    }
    let mut committed = Vec::new();
    while let Some(written) = tasks.join_next().await {
        committed.extend(written.expect("no panic"));
    }
    committed.sort_unstable();

    let expected: Vec<i64> = (1..=i64::try_from(committed.len()).unwrap()).collect();
    assert_eq!(
        committed, expected,
        "each committed increment saw the one before it"
    );
    let logged: Vec<i64> = sqlx::query_scalar("SELECT n FROM increments ORDER BY n")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(logged, expected, "exactly the committed work is kept");
    assert_eq!(
        count(&db, "SELECT n FROM counter WHERE id = 1").await,
        i64::try_from(committed.len()).unwrap()
    );
    let (transactions_after, _) = db.commit_counts();
    assert_eq!(
        transactions_after - transactions,
        u64::try_from(committed.len()).unwrap()
    );
    db.close().await;
}

/// Once `commit` returns, a reader on another connection sees the work: a commit never returns
/// before its group's physical commit.
async fn a_commit_is_visible_to_every_reader_once_it_returns(backend: TestBackend) {
    let test_db = TestDatabase::new(backend).await;
    let db = connect(&test_db).await;
    execute(&db, "CREATE TABLE notes (n BIGINT PRIMARY KEY)").await;
    let mut tasks = JoinSet::new();
    for n in 0..48_i64 {
        let db = db.clone();
        tasks.spawn(async move {
            let mut tx = db.begin().await.expect("begin");
            insert(&mut tx, n).await.expect("insert");
            tx.commit().await.expect("commit");
            let seen = count(&db, &format!("SELECT COUNT(*) FROM notes WHERE n = {n}")).await;
            assert_eq!(seen, 1, "note {n} is visible once its commit returned");
        });
    }
    join_all(tasks).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM notes").await, 48);
    db.close().await;
}
