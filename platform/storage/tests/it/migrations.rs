use mercato_storage::{Db, Migration, StorageError, migrate};
use mercato_testkit::{TestBackend, TestDatabase};
use tokio::task::JoinSet;

use crate::support::{config, connect, count, fresh, join_all, ledger_versions, table_exists};

const CREATE_ITEMS: Migration = Migration::new(
    1,
    "create items",
    "CREATE TABLE items (id BIGINT PRIMARY KEY, label TEXT NOT NULL)",
);

/// Needs `items`, and would fail with a duplicate key if it ran twice.
const SEED_ITEMS: Migration = Migration::new(
    2,
    "seed items",
    "INSERT INTO items (id, label) VALUES (1, 'first')",
);

const BOTH: &[Migration] = &[CREATE_ITEMS, SEED_ITEMS];

mercato_testkit::backend_tests!(
    migrations_apply_in_order_and_a_second_run_applies_none,
    a_new_migration_is_applied_on_the_next_run,
    a_migration_edited_after_it_was_applied_is_refused,
    a_failing_migration_is_named_and_leaves_nothing_behind,
    concurrent_migrations_apply_each_migration_exactly_once,
    the_postgres_variant_runs_on_postgres_and_the_portable_sql_on_sqlite,
    opening_a_database_another_process_holds_waits_until_it_lets_go,
);

async fn migrations_apply_in_order_and_a_second_run_applies_none(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;

    assert_eq!(migrate(&db, "catalog", BOTH).await.unwrap(), 2);
    assert_eq!(migrate(&db, "catalog", BOTH).await.unwrap(), 0);

    assert_eq!(ledger_versions(&db).await, [1, 2]);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM items").await, 1);
    db.close().await;
}

async fn a_new_migration_is_applied_on_the_next_run(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;

    assert_eq!(migrate(&db, "catalog", &[CREATE_ITEMS]).await.unwrap(), 1);
    assert_eq!(migrate(&db, "catalog", BOTH).await.unwrap(), 1);

    assert_eq!(ledger_versions(&db).await, [1, 2]);
    db.close().await;
}

async fn a_migration_edited_after_it_was_applied_is_refused(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;
    migrate(&db, "catalog", &[CREATE_ITEMS]).await.unwrap();
    let edited = Migration {
        sql: "CREATE TABLE items (id BIGINT PRIMARY KEY, label TEXT)",
        ..CREATE_ITEMS
    };

    let err = migrate(&db, "catalog", &[edited]).await.unwrap_err();

    let StorageError::Migration {
        service,
        version,
        reason,
        ..
    } = &err
    else {
        panic!("expected a migration error, got {err:?}");
    };
    assert_eq!((service.as_str(), *version), ("catalog", 1));
    assert!(reason.contains("edited"), "{err}");
    db.close().await;
}

async fn a_failing_migration_is_named_and_leaves_nothing_behind(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;
    let broken = Migration::new(
        2,
        "half done",
        "CREATE TABLE half_done (x TEXT); INSERT INTO no_such_table (x) VALUES ('y')",
    );

    let err = migrate(&db, "catalog", &[CREATE_ITEMS, broken])
        .await
        .unwrap_err();

    let StorageError::Migration { version, name, .. } = &err else {
        panic!("expected a migration error, got {err:?}");
    };
    assert_eq!((*version, name.as_str()), (2, "half done"));
    assert!(err.to_string().contains("migration 2 (half done)"), "{err}");
    assert!(
        !table_exists(&db, "half_done").await,
        "the failed migration was rolled back"
    );
    assert_eq!(
        ledger_versions(&db).await,
        [1],
        "only the good migration is recorded"
    );
    assert!(table_exists(&db, "items").await);

    let fixed = Migration {
        sql: "CREATE TABLE half_done (x TEXT)",
        ..broken
    };
    assert_eq!(migrate(&db, "catalog", &[CREATE_ITEMS, fixed]).await.unwrap(), 1);
    assert_eq!(ledger_versions(&db).await, [1, 2]);
    db.close().await;
}

async fn concurrent_migrations_apply_each_migration_exactly_once(backend: TestBackend) {
    const REPLICAS: usize = 4;
    let test_db = TestDatabase::new(backend).await;
    let mut replicas = JoinSet::new();
    // Each replica has its own pool, as separate processes starting together would.
    for _ in 0..REPLICAS {
        let config = config(test_db.url());
        replicas.spawn(async move {
            let db = Db::connect(&config).await?;
            let applied = migrate(&db, "catalog", BOTH).await;
            db.close().await;
            applied
        });
    }
    let applied: usize = join_all(replicas)
        .await
        .into_iter()
        .map(|applied| applied.expect("every replica's migrate succeeds"))
        .sum();

    assert_eq!(
        applied,
        BOTH.len(),
        "between them the replicas applied each migration once"
    );
    let db = connect(&test_db).await;
    assert_eq!(ledger_versions(&db).await, [1, 2]);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM items").await, 1);
    db.close().await;
}

async fn the_postgres_variant_runs_on_postgres_and_the_portable_sql_on_sqlite(backend: TestBackend) {
    let (_test_db, db) = fresh(backend).await;
    let variant = Migration::new(1, "dialects", "CREATE TABLE made_by_portable_sql (x TEXT)")
        .with_postgres("CREATE TABLE made_by_postgres_sql (x TEXT)");

    assert_eq!(migrate(&db, "catalog", &[variant]).await.unwrap(), 1);

    let on_postgres = backend == TestBackend::Postgres;
    assert_eq!(table_exists(&db, "made_by_postgres_sql").await, on_postgres);
    assert_eq!(table_exists(&db, "made_by_portable_sql").await, !on_postgres);
    assert_eq!(
        migrate(&db, "catalog", &[variant]).await.unwrap(),
        0,
        "its checksum matches"
    );
    db.close().await;
}

async fn opening_a_database_another_process_holds_waits_until_it_lets_go(backend: TestBackend) {
    let (test_db, holder) = fresh(backend).await;
    migrate(&holder, "catalog", &[CREATE_ITEMS]).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    let lock = match backend {
        // Any write takes SQLite's one write lock for the file.
        TestBackend::Sqlite => "INSERT INTO items (id, label) VALUES (7, 'held')",
        TestBackend::Postgres => "LOCK TABLE _mercato_migrations IN ACCESS EXCLUSIVE MODE",
    };
    sqlx::query(lock).execute(&mut *held).await.unwrap();

    let impatient = mercato_storage::DatabaseConfig {
        sqlite_busy_timeout_ms: 50,
        ..config(test_db.url())
    };
    let opening = tokio::spawn(async move { mercato_storage::open(&impatient, "catalog", BOTH).await });
    // Held well past the opener's busy timeout: a start-up that gave up would have ended by now.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(!opening.is_finished(), "start-up gave up on a busy database");
    held.rollback().await.unwrap();

    let opened = tokio::time::timeout(crate::support::PATIENCE, opening)
        .await
        .expect("start-up continues once the lock is free")
        .unwrap()
        .expect("the migrations apply");
    assert_eq!(ledger_versions(&opened).await, [1, 2]);
    opened.close().await;
    holder.close().await;
}
