//! Operator commands against a running system, on both backends: dead letters and projections.

use mercato_messaging::Bus;
use mercato_testkit::{TestBackend, backend_tests, eventually};
use serde_json::json;

use crate::support::{
    PATIENCE, System, access_token, fresh, login, metrics_of, poison_registration, register, run, sample,
    unique_email,
};
use reqwest::Method;

backend_tests!(
    a_poison_event_is_parked_listed_and_replayed_while_good_events_flow,
    projections_rebuild_restores_the_read_model
);

/// The environment that points a `mercato` command at this test's databases and bus.
fn env_of(config: &mercato::Config) -> Vec<(&'static str, String)> {
    vec![
        ("MERCATO_BUS__URL", config.bus.url.clone()),
        (
            "MERCATO_SERVICES__CUSTOMERS__DATABASE_URL",
            config.database_for(mercato::ServiceName::Customers).url,
        ),
        (
            "MERCATO_SERVICES__IDENTITY__DATABASE_URL",
            config.database_for(mercato::ServiceName::Identity).url,
        ),
    ]
}

async fn a_poison_event_is_parked_listed_and_replayed_while_good_events_flow(backend: TestBackend) {
    let (_fixture, config) = fresh(backend).await;
    let system = System::start(config.clone()).await;

    let poison = poison_registration();
    let bus = Bus::connect(&config.bus).await.unwrap();
    bus.publish(&poison).await.unwrap();

    // Good events still flow past it.
    let email = unique_email();
    register(&system.http, &system.gateway, &email).await;
    let token = access_token(&login(&system.http, &system.gateway, &email).await);
    eventually(PATIENCE, "a profile despite the poison message", || async {
        (system.get_status("/api/customers/me", &token).await == 200).then_some(())
    })
    .await;

    let data = config.data_dir.to_str().unwrap().to_owned();
    let env = env_of(&config);
    // Notifications reads identity's events too and parks the poison as well: follow customers'
    // letter.
    let customers_letter = |out: &str| {
        out.lines()
            .find(|l| l.contains(&poison.id) && l.contains("group=customers-on-identity"))
            .map(str::to_owned)
    };
    let letter = eventually(
        PATIENCE,
        "customers' poison message in the dead letters",
        || async {
            let (ok, out, _) = run(&["dlq", "list", "--data-dir", &data], &env).await;
            if ok { customers_letter(&out) } else { None }
        },
    )
    .await;
    assert!(letter.contains("UserRegistered"), "{letter}");
    let id = letter.split_whitespace().next().unwrap().to_owned();

    let (ok, out, err) = run(&["dlq", "replay", &id, "--data-dir", &data], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("replayed"), "{out}");
    // Still poison: it is handled again and parked again, under a new dead-letter id.
    eventually(PATIENCE, "the replayed message to be parked again", || async {
        let (ok, out, _) = run(&["dlq", "list", "--data-dir", &data], &env).await;
        let again = customers_letter(&out)?;
        (ok && !again.starts_with(&format!("{id} "))).then_some(())
    })
    .await;
    let (ok, _, err) = run(&["dlq", "replay", "no-such-letter", "--data-dir", &data], &env).await;
    assert!(!ok && err.contains("no dead letter"), "{err}");

    let customers = system.urls["customers"].clone();
    let metrics = metrics_of(&system.http, &customers)
        .await
        .expect("customers' metrics");
    let series = |name: &str, outcome: Option<&str>| match outcome {
        Some(outcome) => format!(r#"{name}{{subscriber="customers-on-identity",outcome="{outcome}"}}"#),
        None => format!(r#"{name}{{subscriber="customers-on-identity"}}"#),
    };
    // A payload that does not decode is parked at its first failure: once, then again after
    // the replay.
    assert_eq!(
        sample(
            &metrics,
            &series("mercato_consumer_messages_total", Some("parked"))
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &series("mercato_consumer_handler_errors_total", None)),
        Some(2.0),
        "{metrics}"
    );
    // The registration was applied; nothing of the category is left unacknowledged (the lag is
    // reported at most once a second, so it may take a moment to show).
    eventually(
        PATIENCE,
        "customers to report the registration applied and no lag",
        || async {
            let metrics = metrics_of(&system.http, &customers).await?;
            (sample(
                &metrics,
                &series("mercato_consumer_messages_total", Some("applied")),
            ) == Some(1.0)
                && sample(&metrics, &series("mercato_consumer_lag", None)) == Some(0.0))
            .then_some(())
        },
    )
    .await;
    system.stop().await;
}

async fn projections_rebuild_restores_the_read_model(backend: TestBackend) {
    let (_fixture, config) = fresh(backend).await;
    let system = System::start(config.clone()).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let email = unique_email();
        register(&system.http, &system.gateway, &email).await;
        tokens.push(access_token(&login(&system.http, &system.gateway, &email).await));
    }
    for token in &tokens {
        eventually(PATIENCE, "every profile", || async {
            (system.get_status("/api/customers/me", token).await == 200).then_some(())
        })
        .await;
    }
    let renamed = system
        .send_json(
            Method::PATCH,
            "/api/customers/me",
            &tokens[0],
            &json!({"name": "Renamed"}),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    let before: Vec<String> = {
        let mut bodies = Vec::new();
        for token in &tokens {
            let body = system.send(Method::GET, "/api/customers/me", token).await;
            bodies.push(body.text().await.unwrap());
        }
        bodies
    };
    system.stop().await;

    let data = config.data_dir.to_str().unwrap().to_owned();
    let env = env_of(&config);
    let (ok, out, err) = run(
        &[
            "projections",
            "rebuild",
            "customers.profiles",
            "--data-dir",
            &data,
        ],
        &env,
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("rebuilt customers.profiles from 4 event(s)"),
        "{out}"
    );
    let (ok, _, err) = run(
        &["projections", "rebuild", "customers.nothing", "--data-dir", &data],
        &env,
    )
    .await;
    assert!(!ok && err.contains("no projection"), "{err}");

    let system = System::start(config).await;
    for (token, expected) in tokens.iter().zip(before) {
        let after = system.send(Method::GET, "/api/customers/me", token).await;
        assert_eq!(
            after.text().await.unwrap(),
            expected,
            "the rebuilt read model equals the live one"
        );
    }
    system.stop().await;
}
