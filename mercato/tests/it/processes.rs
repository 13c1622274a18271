//! `mercato` as a user runs it: separate processes, signals, and the operator commands.

use mercato::ServiceName;
use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{DatabaseConfig, Db, Migration};
use mercato_testkit::service::json_answer;
use mercato_testkit::{TestBackend, TestDatabase};

use crate::faults::{Cluster, SERVICES, VISA};
use crate::support::{
    Process, access_token, every_service_on_a_free_port, login, problem, register, run, unique_email,
};

/// Every service as its own `mercato serve` process, on PostgreSQL and NATS JetStream.
mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_service_runs_as_its_own_process_on_postgres_and_nats() {
        let mut cluster = Cluster::start(&[]).await;
        cluster.all_ready().await;

        // A checkout through the gateway needs every process: identity for the account and its
        // token, customers for the profile (over NATS from identity's event, and over gRPC to
        // orders), inventory for prices and stock, orders for the saga, payments and the
        // sandbox for the charge, notifications for the confirmation.
        let shopper = cluster.customer().await;
        let stock = cluster.available().await.expect("the product's stock");
        let placed = cluster.place(&shopper, &[VISA, VISA]).await;
        cluster.assert_invariants(&shopper, &placed, stock).await;
        for order in &placed {
            let view = cluster.order(&shopper, &order.id).await.expect("the order");
            assert_eq!(view["status"], "confirmed", "{view}");
            assert_eq!(view["payment"]["status"], "captured", "{view}");
            let charges = cluster.charges(&order.id).await;
            assert_eq!(charges.len(), 1, "{charges:?}");
            assert_eq!(charges[0]["status"], "succeeded", "{charges:?}");
        }
        let sold: i64 = placed.iter().map(|o| o.quantity).sum();
        assert_eq!(cluster.available().await, Some(stock - sold));

        cluster.terminate("gateway").await;
        // With the gateway gone, the services still serve; then they stop cleanly too.
        for name in SERVICES.iter().filter(|n| **n != "gateway") {
            let ready = cluster
                .http
                .get(cluster.url(name, "/ready"))
                .send()
                .await
                .unwrap();
            assert_eq!(ready.status(), 200, "{name}");
        }
        for name in SERVICES.iter().filter(|n| **n != "gateway") {
            cluster.terminate(name).await;
        }
        cluster.stop().await;
    }

    /// The versions in a database's migration ledger with the time each was applied, in order.
    async fn ledger(url: &str) -> Vec<(i64, i64)> {
        let db = Db::connect(&DatabaseConfig {
            url: url.to_owned(),
            ..DatabaseConfig::default()
        })
        .await
        .expect("the service's database");
        let rows = sqlx::query("SELECT version, applied_at FROM _mercato_migrations ORDER BY version")
            .fetch_all(db.pool())
            .await
            .expect("the migration ledger");
        db.close().await;
        rows.iter()
            .map(|r| (r.get("version"), r.get("applied_at")))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_applies_every_services_migrations_once_on_postgres() {
        let db = TestDatabase::new(TestBackend::Postgres).await;
        let services: [(&str, &[Migration]); 6] = [
            ("identity", mercato_identity::store::MIGRATIONS),
            ("customers", mercato_customers::store::MIGRATIONS),
            ("inventory", mercato_inventory::store::MIGRATIONS),
            ("orders", mercato_orders::store::MIGRATIONS),
            ("notifications", mercato_notifications::store::MIGRATIONS),
            ("payments", mercato_payments::store::MIGRATIONS),
        ];
        let mut keeping_data: Vec<&str> = ServiceName::ALL
            .iter()
            .filter(|s| s.is_domain_service())
            .map(|s| s.as_str())
            .collect();
        let mut listed: Vec<&str> = services.iter().map(|(name, _)| *name).collect();
        keeping_data.sort_unstable();
        listed.sort_unstable();
        assert_eq!(listed, keeping_data, "every service with a database is checked");
        let urls: Vec<(String, String)> = services
            .iter()
            .map(|(name, _)| {
                let key = format!("MERCATO_SERVICES__{}__DATABASE_URL", name.to_uppercase());
                (key, db.service_url(name))
            })
            .collect();
        let env: Vec<(&str, String)> = urls.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let data = db.dir().to_str().unwrap().to_owned();

        let (ok, out, err) = run(&["migrate", "--data-dir", &data], &env).await;
        assert!(ok, "{err}");
        assert_eq!(
            out.matches("migration(s) applied").count(),
            services.len(),
            "{out}"
        );
        let mut applied = Vec::new();
        for ((name, migrations), (_, url)) in services.iter().zip(&urls) {
            let line = format!("{name}: {} migration(s) applied (postgres)", migrations.len());
            assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
            let mut versions: Vec<i64> = migrations.iter().map(|m| m.version).collect();
            versions.sort_unstable();
            let ledger = ledger(url).await;
            let recorded: Vec<i64> = ledger.iter().map(|(version, _)| *version).collect();
            assert_eq!(recorded, versions, "{name}'s ledger");
            applied.push(ledger);
        }

        let (ok, out, err) = run(&["migrate", "--data-dir", &data], &env).await;
        assert!(ok, "{err}");
        for (((name, _), (_, url)), before) in services.iter().zip(&urls).zip(&applied) {
            let line = format!("{name}: 0 migration(s) applied (postgres)");
            assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
            assert_eq!(&ledger(url).await, before, "{name}'s ledger is untouched");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mercato_up_serves_the_whole_system_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = every_service_on_a_free_port(dir.path());
    let up = Process::spawn(
        &["up", "--data-dir", data.to_str().unwrap(), "--config", &config],
        &[],
        &["identity", "gateway"],
    )
    .await;
    let base = up.url("gateway").to_owned();
    let http = reqwest::Client::new();
    let email = unique_email();
    assert_eq!(register(&http, &base, &email).await.status(), 201);
    let ready = reqwest::get(format!("{base}/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        data.join("identity.db").exists(),
        "embedded mode keeps identity's SQLite file in the data dir"
    );
    assert!(up.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_create_makes_an_admin_who_can_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let email = unique_email();
    let env = [("MERCATO_ADMIN_PASSWORD", "correct horse".to_owned())];
    let (ok, out, err) = run(&["admin", "create", "--email", &email, "--data-dir", &data], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("created admin"), "{out}");

    let config = every_service_on_a_free_port(dir.path());
    let up = Process::spawn(
        &["up", "--data-dir", &data, "--config", &config],
        &[],
        &["gateway"],
    )
    .await;
    let base = up.url("gateway").to_owned();
    let http = reqwest::Client::new();
    let token = access_token(&login(&http, &base, &email).await);
    let me = json_answer(http.get(format!("{base}/api/identity/me")).bearer_auth(&token)).await;
    assert!(
        me["roles"].as_array().unwrap().iter().any(|r| r == "admin"),
        "{me}"
    );

    let customer = unique_email();
    register(&http, &base, &customer).await;
    let (ok, out, _) = run(
        &["admin", "create", "--email", &customer, "--data-dir", &data],
        &env,
    )
    .await;
    assert!(ok && out.contains("is now an admin"), "{out}");
    let weak = [("MERCATO_ADMIN_PASSWORD", "short".to_owned())];
    let (ok, _, err) = run(
        &["admin", "create", "--email", &unique_email(), "--data-dir", &data],
        &weak,
    )
    .await;
    assert!(!ok && err.contains("password"), "{err}");
    assert!(up.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_setting_stops_start_up_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    for (variable, value, key) in [
        ("MERCATO_HTTP__BODY_LIMIT_BYTES", "0", "http.body_limit_bytes"),
        (
            "MERCATO_GATEWAY__UPSTREAM_TIMEOUT_MS",
            "soon",
            "upstream_timeout_ms",
        ),
    ] {
        let (ok, _, err) = run(&["up", "--data-dir", &data], &[(variable, value.into())]).await;
        assert!(!ok, "{variable}={value} was accepted");
        assert!(err.contains(key), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_prints_the_effective_settings_with_passwords_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let env = [(
        "MERCATO_DATABASE__URL",
        "postgres://mercato:hunter2@db.internal:5432/{service}".to_owned(),
    )];
    let (ok, out, err) = run(&["config", "--data-dir", &data], &env).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("postgres://mercato:***@db.internal:5432/{service}"),
        "{out}"
    );
    assert!(!out.contains("hunter2"));
    assert!(out.contains("[services.gateway]"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stopped_early_ends_the_output_not_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    // A pipe whose reader is gone before the command starts: every write fails with EPIPE, as
    // it does for `mercato … | head` once `head` has read its lines.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mercato"));
    command
        .args(["config", "--data-dir", &data])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("mercato finishes")
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {err}", output.status);
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_adds_a_key_and_keeps_the_old_one_published() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let (ok, _, err) = run(&["keys", "rotate", "--data-dir", &data], &[]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["keys", "rotate", "--data-dir", &data], &[]).await;
    assert!(ok, "{err}");
    // The first key signs; the second is published and waits out the activation delay.
    assert_eq!(out.matches("  next").count(), 1, "{out}");
    assert_eq!(out.matches("  active").count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_through_a_process_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = every_service_on_a_free_port(dir.path());
    let up = Process::spawn(
        &[
            "up",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--config",
            &config,
        ],
        &[],
        &["gateway"],
    )
    .await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/identity/register", up.url("gateway")))
        .json(&serde_json::json!({"email": "x", "password": "y", "name": ""}))
        .send()
        .await
        .unwrap();
    let body = problem(response, 422).await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 3, "{body}");
    assert!(up.terminate().await.success());
}
