//! Helpers shared by the storage tests.

use std::path::PathBuf;

use mercato_storage::{Backend, DatabaseConfig, Db};
use mercato_testkit::{TestBackend, TestDatabase, drop_postgres_databases, postgres_admin_url};
use sqlx::Connection as _;

pub use mercato_testkit::{PATIENCE, join_all};

/// The default configuration pointed at `url`.
pub fn config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: url.to_owned(),
        ..DatabaseConfig::default()
    }
}

/// A new database on `backend` and a pool on it; the database lives as long as the first half.
pub async fn fresh(backend: TestBackend) -> (TestDatabase, Db) {
    let test_db = TestDatabase::new(backend).await;
    let db = connect(&test_db).await;
    (test_db, db)
}

pub async fn connect(db: &TestDatabase) -> Db {
    Db::connect(&config(db.url()))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", db.url()))
}

pub fn backend_of(backend: TestBackend) -> Backend {
    match backend {
        TestBackend::Sqlite => Backend::Sqlite,
        TestBackend::Postgres => Backend::Postgres,
    }
}

/// Reads the counter (locking its row on PostgreSQL, where READ COMMITTED would let two
/// transactions read the same value; SQLite's writers take turns) and writes it plus one, in
/// `tx`; the value written.
pub async fn bump(tx: &mut mercato_storage::Tx) -> i64 {
    let lock = match Backend::of_connection(tx) {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE",
    };
    let n: i64 = sqlx::query_scalar(&format!("SELECT n FROM counter WHERE id = 1{lock}"))
        .fetch_one(&mut **tx)
        .await
        .expect("read");
    sqlx::query("UPDATE counter SET n = $1 WHERE id = 1")
        .bind(n + 1)
        .execute(&mut **tx)
        .await
        .expect("write");
    n + 1
}

/// Runs one or more statements that are expected to succeed.
pub async fn execute(db: &Db, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub async fn table_exists(db: &Db, table: &str) -> bool {
    let sql = match db.backend() {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        Backend::Postgres => "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = $1",
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(table)
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("look up table {table}: {e}"));
    n > 0
}

/// The versions recorded in the migration ledger, in order.
pub async fn ledger_versions(db: &Db) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _mercato_migrations ORDER BY version")
        .fetch_all(db.pool())
        .await
        .expect("read the migration ledger")
}

/// A database URL whose target does not exist yet: a SQLite file in directories not yet made,
/// or a PostgreSQL database not yet created (dropped, if it was created, when this is dropped).
pub struct MissingDatabase {
    url: String,
    target: Target,
}

enum Target {
    Sqlite { path: PathBuf, _scratch: TestDatabase },
    Postgres { name: String },
}

impl MissingDatabase {
    pub async fn new(backend: TestBackend) -> Self {
        match backend {
            TestBackend::Sqlite => {
                let scratch = TestDatabase::new(TestBackend::Sqlite).await;
                let path = scratch.dir().join("not").join("yet").join("service.db");
                Self {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    target: Target::Sqlite {
                        path,
                        _scratch: scratch,
                    },
                }
            }
            TestBackend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("mercato_test_{}", uuid::Uuid::new_v4().simple());
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Self {
                    url: format!("{base}/{name}"),
                    target: Target::Postgres { name },
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn exists(&self) -> bool {
        match &self.target {
            Target::Sqlite { path, .. } => path.is_file(),
            Target::Postgres { name } => {
                let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
                    .await
                    .expect("PostgreSQL admin connection");
                let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(name)
                    .fetch_optional(&mut admin)
                    .await
                    .expect("query pg_database");
                let _ = admin.close().await;
                found.is_some()
            }
        }
    }
}

impl Drop for MissingDatabase {
    fn drop(&mut self) {
        if let Target::Postgres { name } = &self.target {
            drop_postgres_databases(vec![name.clone()]);
        }
    }
}
