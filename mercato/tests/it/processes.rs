//! `mercato` as a user runs it: separate processes, signals, and the operator commands.

use mercato_testkit::nats::NatsServer;
use mercato_testkit::{TestBackend, TestDatabase, eventually};
use serde_json::Value;

use crate::support::{
    PATIENCE, Process, access_token, every_service_on_a_free_port, login, problem, register, run,
    unique_email,
};

/// Identity and gateway as two `mercato serve` processes, identity on PostgreSQL.
mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_service_runs_as_its_own_process_on_postgres_and_nats() {
        let db = TestDatabase::new(TestBackend::Postgres).await;
        let nats = NatsServer::start(db.dir()).await;
        let data = db.dir().join("data");
        let data = data.to_str().unwrap();
        let bus = ("MERCATO_BUS__URL", nats.url());
        let identity = Process::spawn(
            &["serve", "identity", "--data-dir", data],
            &[
                ("MERCATO_SERVICES__IDENTITY__LISTEN", "127.0.0.1:0".into()),
                (
                    "MERCATO_SERVICES__IDENTITY__DATABASE_URL",
                    db.service_url("identity"),
                ),
                bus.clone(),
            ],
            &["identity"],
        )
        .await;
        let identity_url = (
            "MERCATO_SERVICES__IDENTITY__URL",
            identity.url("identity").to_owned(),
        );
        let customers = Process::spawn(
            &["serve", "customers", "--data-dir", data],
            &[
                ("MERCATO_SERVICES__CUSTOMERS__LISTEN", "127.0.0.1:0".into()),
                (
                    "MERCATO_SERVICES__CUSTOMERS__DATABASE_URL",
                    db.service_url("customers"),
                ),
                identity_url.clone(),
                bus.clone(),
            ],
            &["customers"],
        )
        .await;
        let gateway = Process::spawn(
            &["serve", "gateway", "--data-dir", data],
            &[
                ("MERCATO_SERVICES__GATEWAY__LISTEN", "127.0.0.1:0".into()),
                identity_url,
                (
                    "MERCATO_SERVICES__CUSTOMERS__URL",
                    customers.url("customers").to_owned(),
                ),
            ],
            &["gateway"],
        )
        .await;
        let base = gateway.url("gateway").to_owned();
        let http = reqwest::Client::new();
        let email = unique_email();
        assert_eq!(register(&http, &base, &email).await.status(), 201);
        let token = access_token(&login(&http, &base, &email).await);
        let me = http
            .get(format!("{base}/api/identity/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 200);
        let profile: Value = eventually(PATIENCE, "the profile to reach customers over NATS", || async {
            let response = http
                .get(format!("{base}/api/customers/me"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                response.json().await.ok()
            } else {
                None
            }
        })
        .await;
        assert_eq!(profile["email"], email.as_str());

        assert!(
            gateway.terminate().await.success(),
            "the gateway exits cleanly on SIGTERM"
        );
        // With the gateway gone, the services still serve; then they stop cleanly too.
        let ready = reqwest::get(format!("{}/ready", identity.url("identity")))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        assert!(
            customers.terminate().await.success(),
            "customers exits cleanly on SIGTERM"
        );
        assert!(
            identity.terminate().await.success(),
            "identity exits cleanly on SIGTERM"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_applies_every_services_migrations_once_on_postgres() {
        let db = TestDatabase::new(TestBackend::Postgres).await;
        let env = [
            (
                "MERCATO_SERVICES__IDENTITY__DATABASE_URL",
                db.service_url("identity"),
            ),
            (
                "MERCATO_SERVICES__CUSTOMERS__DATABASE_URL",
                db.service_url("customers"),
            ),
        ];
        let data = db.dir().to_str().unwrap().to_owned();
        let (ok, out, err) = run(&["migrate", "--data-dir", &data], &env).await;
        assert!(ok, "{err}");
        assert!(
            out.contains("identity: 2 migration(s) applied (postgres)"),
            "{out}"
        );
        assert!(
            out.contains("customers: 4 migration(s) applied (postgres)"),
            "{out}"
        );
        let (ok, out, _) = run(&["migrate", "--data-dir", &data], &env).await;
        assert!(ok);
        assert!(out.contains("identity: 0 migration(s) applied"), "{out}");
        assert!(out.contains("customers: 0 migration(s) applied"), "{out}");
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
    let me: Value = http
        .get(format!("{base}/api/identity/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let (ok, _, err) = run(
        &["up", "--data-dir", &data],
        &[("MERCATO_HTTP__BODY_LIMIT_BYTES", "0".into())],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("http.body_limit_bytes"), "{err}");
    let (ok, _, err) = run(
        &["up", "--data-dir", &data],
        &[("MERCATO_GATEWAY__UPSTREAM_TIMEOUT_MS", "soon".into())],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("upstream_timeout_ms"), "{err}");
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
