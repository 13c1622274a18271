use mercato_storage::{Backend, Db};
use mercato_testkit::{TestBackend, TestDatabase};
use tokio::task::JoinSet;

use crate::support::{connect, count, execute, join_all};

mercato_testkit::backend_tests!(
    concurrent_write_transactions_all_commit_and_no_increment_is_lost,
    a_dropped_transaction_leaves_nothing_and_frees_the_writer,
    a_rolled_back_transaction_leaves_nothing,
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
            let n: i64 = sqlx::query_scalar("SELECT n FROM counter WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .expect("read");
            sqlx::query("UPDATE counter SET n = $1 WHERE id = 1")
                .bind(n + 1)
                .execute(&mut *tx)
                .await
                .expect("write");
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

async fn concurrent_write_transactions_all_commit_and_no_increment_is_lost(backend: TestBackend) {
    const WRITERS: i64 = 8;
    let test_db = TestDatabase::new(backend).await;
    let db = connect(&test_db).await;
    counter(&db).await;

    let mut writers = JoinSet::new();
    for _ in 0..WRITERS {
        writers.spawn(increment(db.clone()));
    }
    join_all(writers).await;

    assert_eq!(count(&db, "SELECT n FROM counter WHERE id = 1").await, WRITERS);
    db.close().await;
}

async fn a_dropped_transaction_leaves_nothing_and_frees_the_writer(backend: TestBackend) {
    let test_db = TestDatabase::new(backend).await;
    let db = connect(&test_db).await;
    execute(&db, "CREATE TABLE notes (body TEXT NOT NULL)").await;

    {
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO notes (body) VALUES ('abandoned')")
            .execute(&mut *tx)
            .await
            .unwrap();
    }

    assert_eq!(count(&db, "SELECT COUNT(*) FROM notes").await, 0);
    let mut tx = db
        .begin()
        .await
        .expect("the dropped transaction released the write lock");
    sqlx::query("INSERT INTO notes (body) VALUES ('kept')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(bodies, ["kept"]);
    db.close().await;
}

async fn a_rolled_back_transaction_leaves_nothing(backend: TestBackend) {
    let test_db = TestDatabase::new(backend).await;
    let db = connect(&test_db).await;
    execute(&db, "CREATE TABLE notes (body TEXT NOT NULL)").await;

    let mut tx = db.begin().await.unwrap();
    sqlx::query("INSERT INTO notes (body) VALUES ('undone')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(count(&db, "SELECT COUNT(*) FROM notes").await, 0);
    db.close().await;
}
