use mercato_storage::{Backend, DatabaseConfig, Db};
use mercato_testkit::{TestBackend, TestDatabase};
use tokio::task::JoinSet;

use crate::support::{PATIENCE, bump, config, count, execute, fresh, join_all};

mercato_testkit::backend_tests!(
    concurrent_write_transactions_all_commit_and_no_increment_is_lost,
    many_writers_commit_in_turn_without_ever_meeting_a_busy_database,
    readers_are_not_blocked_by_an_open_write_transaction_and_the_next_writer_waits_its_turn,
    a_dropped_transaction_leaves_nothing_and_frees_the_writer,
    a_rolled_back_transaction_leaves_nothing,
    a_begin_cancelled_half_way_leaves_no_transaction_open,
    a_write_waiting_for_the_lock_leaves_the_thread_to_the_holder,
);

async fn counter(db: &Db) {
    execute(
        db,
        "CREATE TABLE counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
    )
    .await;
    execute(db, "INSERT INTO counter (id, n) VALUES (1, 0)").await;
}

/// On SQLite, read then write: `BEGIN IMMEDIATE` serialises writers, so none sees a stale count
/// and none fails with SQLITE_BUSY when it upgrades. PostgreSQL's default READ COMMITTED would
/// lose updates that way, so there the increment is a single statement.
async fn increment(db: Db) {
    let mut tx = db.begin().await.expect("begin");
    match db.backend() {
        Backend::Sqlite => {
            bump(&mut tx).await;
        }
        Backend::Postgres => {
            sqlx::query("UPDATE counter SET n = n + 1 WHERE id = 1")
                .execute(&mut *tx)
                .await
                .expect("write");
        }
    }
    tx.commit().await.expect("commit");
}

/// Runs `writers` increments at once and checks that each of them counted.
async fn every_concurrent_increment_counts(db: &Db, writers: i64) {
    counter(db).await;
    let mut tasks = JoinSet::new();
    for _ in 0..writers {
        tasks.spawn(increment(db.clone()));
    }
    join_all(tasks).await;

    assert_eq!(
        count(db, "SELECT n FROM counter WHERE id = 1").await,
        writers,
        "every writer committed and none lost another's increment"
    );
}

async fn concurrent_write_transactions_all_commit_and_no_increment_is_lost(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;
    every_concurrent_increment_counts(&db, 8).await;
    db.close().await;
}

/// A database on which SQLite never waits for a lock: any writer that found it taken would
/// fail at once with SQLITE_BUSY instead of sleeping in the busy handler.
async fn connect_without_busy_waits(test_db: &TestDatabase) -> Db {
    Db::connect(&DatabaseConfig {
        sqlite_busy_timeout_ms: 0,
        acquire_timeout_ms: PATIENCE.as_millis().try_into().unwrap(),
        ..config(test_db.url())
    })
    .await
    .expect("connect")
}

async fn many_writers_commit_in_turn_without_ever_meeting_a_busy_database(backend: TestBackend) {
    let test_db = TestDatabase::new(backend).await;
    let db = connect_without_busy_waits(&test_db).await;
    every_concurrent_increment_counts(&db, 64).await;
    db.close().await;
}

async fn readers_are_not_blocked_by_an_open_write_transaction_and_the_next_writer_waits_its_turn(
    backend: TestBackend,
) {
    let test_db = TestDatabase::new(backend).await;
    let db = connect_without_busy_waits(&test_db).await;
    execute(&db, "CREATE TABLE notes (n BIGINT NOT NULL)").await;

    let first = note(db.clone(), 1).await;
    let second = tokio::spawn(note(db.clone(), 2));
    let read = tokio::time::timeout(PATIENCE, count(&db, "SELECT COUNT(*) FROM notes"))
        .await
        .expect("a read does not wait for the writer");
    assert_eq!(read, 0, "readers see what was committed before");
    // On SQLite the second writer joins the first's group, whose commit waits for it to end:
    // the first's commit is awaited after the second's.
    let first = tokio::spawn(first.commit());
    tokio::time::timeout(PATIENCE, second)
        .await
        .expect("the second writer gets its turn")
        .expect("no panic")
        .commit()
        .await
        .expect("the second writer commits");
    first.await.expect("no panic").expect("the first writer commits");

    let notes: Vec<i64> = sqlx::query_scalar("SELECT n FROM notes ORDER BY n")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(notes, [1, 2]);
    db.close().await;
}

/// Inserts a note saying `body` in `tx`.
async fn write_body(tx: &mut mercato_storage::Tx, body: &str) {
    sqlx::query("INSERT INTO notes (body) VALUES ($1)")
        .bind(body)
        .execute(&mut **tx)
        .await
        .expect("insert");
}

/// Begins a write transaction and inserts `n` in it, leaving it open.
async fn note(db: Db, n: i64) -> mercato_storage::Tx {
    let mut tx = db.begin().await.expect("begin");
    sqlx::query("INSERT INTO notes (n) VALUES ($1)")
        .bind(n)
        .execute(&mut *tx)
        .await
        .expect("insert");
    tx
}

async fn a_dropped_transaction_leaves_nothing_and_frees_the_writer(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;
    execute(&db, "CREATE TABLE notes (body TEXT NOT NULL)").await;

    {
        let mut tx = db.begin().await.unwrap();
        write_body(&mut tx, "abandoned").await;
    }

    assert_eq!(count(&db, "SELECT COUNT(*) FROM notes").await, 0);
    let mut tx = db
        .begin()
        .await
        .expect("the dropped transaction released the write lock");
    write_body(&mut tx, "kept").await;
    tx.commit().await.unwrap();
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(bodies, ["kept"]);
    db.close().await;
}

async fn a_rolled_back_transaction_leaves_nothing(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;
    execute(&db, "CREATE TABLE notes (body TEXT NOT NULL)").await;

    let mut tx = db.begin().await.unwrap();
    write_body(&mut tx, "undone").await;
    tx.rollback().await.unwrap();

    assert_eq!(count(&db, "SELECT COUNT(*) FROM notes").await, 0);
    db.close().await;
}

/// A caller that goes away while its `begin` is under way (a client that hung up, a task
/// aborted in a crash) must not leave the connection inside a transaction: on SQLite that would
/// hold the file's write lock for as long as the pool lives, and every later writer would fail.
async fn a_begin_cancelled_half_way_leaves_no_transaction_open(backend: TestBackend) {
    let (test_db, db) = fresh(backend).await;
    counter(&db).await;
    // Cancelled after ever more time, so that some cancels land between sending `BEGIN` and
    // reading its answer, wherever that falls on this machine.
    for step in 0..200_u64 {
        let wait = std::time::Duration::from_micros(step * 25);
        drop(tokio::time::timeout(wait, db.begin()).await);
        increment(db.clone()).await;
    }
    // Another process's writer finds the file free.
    let other = Db::connect(&DatabaseConfig {
        sqlite_busy_timeout_ms: 1_000,
        ..config(test_db.url())
    })
    .await
    .unwrap();
    increment(other.clone()).await;
    assert_eq!(count(&db, "SELECT n FROM counter WHERE id = 1").await, 201);
    other.close().await;
    db.close().await;
}

/// A write that waits for a lock another connection holds (another process's, on SQLite) waits
/// without holding the thread it was called on: on a runtime of one thread, the task holding the
/// lock still runs, commits, and the waiting write then goes through.
async fn a_write_waiting_for_the_lock_leaves_the_thread_to_the_holder(backend: TestBackend) {
    let test_db = TestDatabase::new(backend).await;
    let url = test_db.url().to_owned();
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime of one thread")
            .block_on(write_behind_a_held_lock(&url));
    })
    .await
    .expect("no panic");
}

async fn write_behind_a_held_lock(url: &str) {
    let holder = Db::connect(&config(url)).await.expect("connect");
    // A pool of its own, as another process has, that would wait for the lock longer than the
    // test: a write that held the thread meanwhile would fail with SQLITE_BUSY, not succeed.
    let waiter = Db::connect(&DatabaseConfig {
        sqlite_busy_timeout_ms: PATIENCE.as_millis().try_into().unwrap(),
        ..config(url)
    })
    .await
    .expect("connect");
    counter(&holder).await;
    // The waiter's connection is open before the race, so its write starts at once.
    assert_eq!(count(&waiter, "SELECT n FROM counter WHERE id = 1").await, 0);

    let mut tx = holder.begin().await.expect("begin");
    bump(&mut tx).await;
    let pool = waiter.pool().clone();
    let write = tokio::spawn(async move {
        sqlx::query("UPDATE counter SET n = n + 1 WHERE id = 1")
            .execute(&pool)
            .await
            .map(|_| ())
    });
    // The one thread runs the write at each yield until it waits for the lock.
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
    tx.commit()
        .await
        .expect("the holder commits while the write waits");
    tokio::time::timeout(PATIENCE, write)
        .await
        .expect("the write ends")
        .expect("no panic")
        .expect("the write goes through once the lock is free");
    assert_eq!(count(&holder, "SELECT n FROM counter WHERE id = 1").await, 2);
    waiter.close().await;
    holder.close().await;
}
