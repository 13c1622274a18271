use mercato_storage::{Backend, DatabaseConfig, Db, StorageError};
use mercato_testkit::{TestBackend, TestDatabase};

use crate::support::{config, connect, count, execute, fresh};

mercato_testkit::backend_tests!(
    a_duplicate_primary_key_is_a_conflict,
    a_writer_blocked_past_its_lock_timeout_gets_a_transient_error_and_the_pool_recovers,
    syntax_errors_and_not_null_violations_are_neither_conflicts_nor_transient,
);

async fn a_duplicate_primary_key_is_a_conflict(backend: TestBackend) {
    let (_test_db, db) = with_skus(backend).await;
    let insert = "INSERT INTO skus (sku, name) VALUES ($1, $2)";
    sqlx::query(insert)
        .bind("SKU-1")
        .bind("mug")
        .execute(db.pool())
        .await
        .unwrap();

    let err: StorageError = sqlx::query(insert)
        .bind("SKU-1")
        .bind("another mug")
        .execute(db.pool())
        .await
        .unwrap_err()
        .into();

    assert!(matches!(err, StorageError::Conflict(_)), "{err:?}");
    assert!(err.is_conflict());
    assert!(
        !err.is_transient(),
        "a conflict is not fixed by retrying: {err:?}"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM skus").await, 1);
    db.close().await;
}

async fn a_writer_blocked_past_its_lock_timeout_gets_a_transient_error_and_the_pool_recovers(
    backend: TestBackend,
) {
    let test_db = TestDatabase::new(backend).await;
    let defaults = config(test_db.url());
    let db = Db::connect(&DatabaseConfig {
        max_connections: 2,
        sqlite_busy_timeout_ms: 50,
        // SQLite's writers wait their turn in the process for the acquire timeout.
        acquire_timeout_ms: match backend {
            TestBackend::Sqlite => 500,
            TestBackend::Postgres => defaults.acquire_timeout_ms,
        },
        ..defaults
    })
    .await
    .unwrap();
    execute(
        &db,
        "CREATE TABLE counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
    )
    .await;
    execute(&db, "INSERT INTO counter (id, n) VALUES (1, 0)").await;
    let bump = "UPDATE counter SET n = n + 1 WHERE id = 1";

    let mut holder = db.begin().await.unwrap();
    sqlx::query(bump).execute(&mut *holder).await.unwrap();
    let err = match db.backend() {
        // The next writer waits its turn for the acquire timeout, then gives up.
        Backend::Sqlite => db.begin().await.expect_err("the write lock is held"),
        Backend::Postgres => {
            let mut blocked = db.begin().await.unwrap();
            sqlx::query("SET LOCAL lock_timeout = '50ms'")
                .execute(&mut *blocked)
                .await
                .unwrap();
            let err = sqlx::query(bump)
                .execute(&mut *blocked)
                .await
                .expect_err("the row is locked");
            StorageError::from(err)
        }
    };
    assert!(matches!(err, StorageError::Transient(_)), "{err:?}");
    assert!(err.is_transient());
    holder.commit().await.unwrap();

    // Both pooled connections, including the one that failed, still commit real transactions.
    for _ in 0..4 {
        let mut tx = db.begin().await.unwrap();
        sqlx::query(bump).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    db.close().await;
    let reopened = connect(&test_db).await;
    assert_eq!(count(&reopened, "SELECT n FROM counter WHERE id = 1").await, 5);
    reopened.close().await;
}

async fn syntax_errors_and_not_null_violations_are_neither_conflicts_nor_transient(backend: TestBackend) {
    let (_test_db, db) = with_skus(backend).await;

    for sql in ["SELEC 1", "INSERT INTO skus (sku, name) VALUES ('SKU-1', NULL)"] {
        let err: StorageError = sqlx::query(sql).execute(db.pool()).await.unwrap_err().into();
        assert!(matches!(err, StorageError::Database(_)), "{sql}: {err:?}");
        assert!(!err.is_conflict() && !err.is_transient(), "{sql}: {err:?}");
    }
    db.close().await;
}

/// A new database with a `skus` table whose key and `NOT NULL` column the tests violate.
async fn with_skus(backend: TestBackend) -> (TestDatabase, Db) {
    let (test_db, db) = fresh(backend).await;
    execute(
        &db,
        "CREATE TABLE skus (sku TEXT PRIMARY KEY, name TEXT NOT NULL)",
    )
    .await;
    (test_db, db)
}
