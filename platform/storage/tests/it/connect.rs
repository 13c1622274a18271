use std::time::Duration;

use mercato_storage::{DatabaseConfig, Db, StorageError};
use mercato_testkit::{TestBackend, TestDatabase};
use tokio::task::JoinSet;

use crate::support::{MissingDatabase, backend_of, config, count, execute, fresh, join_all};

mercato_testkit::backend_tests!(
    connect_creates_a_database_that_does_not_exist_yet,
    concurrent_connects_to_a_new_database_all_succeed,
    ping_answers_and_the_backend_matches_the_url,
);

async fn connect_creates_a_database_that_does_not_exist_yet(backend: TestBackend) {
    let missing = MissingDatabase::new(backend).await;
    assert!(!missing.exists().await, "precondition: {} is new", missing.url());

    let db = Db::connect(&config(missing.url()))
        .await
        .expect("connect creates it");

    assert!(missing.exists().await, "{} was created", missing.url());
    execute(&db, "CREATE TABLE t (x TEXT)").await;
    db.close().await;
}

async fn concurrent_connects_to_a_new_database_all_succeed(backend: TestBackend) {
    let missing = MissingDatabase::new(backend).await;
    let mut connects = JoinSet::new();
    for _ in 0..2 {
        let config = config(missing.url());
        connects.spawn(async move { Db::connect(&config).await });
    }
    let dbs: Vec<Db> = join_all(connects)
        .await
        .into_iter()
        .map(|connected| connected.expect("every concurrent connect succeeds"))
        .collect();

    execute(
        &dbs[0],
        "CREATE TABLE t (x TEXT); INSERT INTO t (x) VALUES ('seen')",
    )
    .await;
    assert_eq!(
        count(&dbs[1], "SELECT COUNT(*) FROM t").await,
        1,
        "both reach one database"
    );
    for db in dbs {
        db.close().await;
    }
}

async fn ping_answers_and_the_backend_matches_the_url(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;

    db.ping().await.expect("ping");
    assert_eq!(db.backend(), backend_of(backend));
    db.close().await;
}

#[tokio::test]
async fn sqlite_connections_use_wal_full_sync_foreign_keys_temp_store_in_memory_and_busy_timeout() {
    let test_db = TestDatabase::new(TestBackend::Sqlite).await;
    let db = Db::connect(&DatabaseConfig {
        sqlite_busy_timeout_ms: 1_234,
        ..config(test_db.url())
    })
    .await
    .unwrap();

    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(journal_mode.to_lowercase(), "wal");
    assert_eq!(count(&db, "PRAGMA synchronous").await, 2, "FULL");
    assert_eq!(count(&db, "PRAGMA foreign_keys").await, 1);
    assert_eq!(count(&db, "PRAGMA busy_timeout").await, 1_234);
    assert_eq!(count(&db, "PRAGMA temp_store").await, 2, "MEMORY");
    db.close().await;
}

#[tokio::test]
async fn a_sqlite_url_without_a_mode_is_a_config_error_and_creates_nothing() {
    let scratch = TestDatabase::new(TestBackend::Sqlite).await;
    let dir = scratch.dir().join("never");
    let url = format!("sqlite://{}", dir.join("service.db").display());

    let err = Db::connect(&config(&url)).await.unwrap_err();

    assert!(matches!(err, StorageError::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("mode=rwc"),
        "the message says how to fix it: {err}"
    );
    assert!(!dir.exists(), "nothing was created for a refused url");
}

#[tokio::test]
async fn an_unknown_scheme_is_a_config_error_that_hides_the_password() {
    let err = Db::connect(&config("mysql://app:hunter2@127.0.0.1:3306/orders"))
        .await
        .unwrap_err();

    assert!(matches!(err, StorageError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("mysql://"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_postgres_url_without_a_database_name_is_a_config_error_that_hides_the_password() {
    let err = Db::connect(&config("postgres://app:hunter2@127.0.0.1:1"))
        .await
        .unwrap_err();

    assert!(matches!(err, StorageError::Config(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_postgres_database_name_that_is_not_a_plain_identifier_is_refused_before_connecting() {
    // Port 1 answers nothing: a Config error proves the name was checked first.
    let err = Db::connect(&config("postgres://postgres@127.0.0.1:1/Orders\";DROP"))
        .await
        .unwrap_err();

    assert!(matches!(err, StorageError::Config(_)), "{err:?}");
}

// On the paused clock the pool's timers run without waiting, so the time it took is exactly
// what the pool waited: the acquire timeout, not a connect timeout of its own or a retry loop.
#[tokio::test(start_paused = true)]
async fn an_unreachable_postgres_is_unavailable_within_the_acquire_timeout() {
    let config = DatabaseConfig {
        acquire_timeout_ms: 200,
        ..config("postgres://postgres@127.0.0.1:1/mercato_unreachable")
    };
    let started = tokio::time::Instant::now();

    let err = Db::connect(&config).await.unwrap_err();

    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(
        err.is_transient(),
        "an unreachable server is worth retrying: {err:?}"
    );
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(200)..=Duration::from_millis(201)).contains(&waited),
        "gave up after {waited:?}, not at the 200 ms acquire timeout"
    );
}
