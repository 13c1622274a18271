//! Nothing accepted is lost when the bus is away: events wait in the outbox and drain when it is
//! back. Distributed: the NATS server is stopped while users register, and `/ready` says so.
//! Embedded (the bus lives in the process): users are registered while the system is down, and
//! the backlog drains when it starts.

use mercato_testkit::{TestBackend, backend_tests, eventually};
use serde_json::Value;

use crate::support::{
    PATIENCE, System, access_token, fresh, login, metrics_of, register, sample, unique_email,
};
use reqwest::Method;

backend_tests!(events_written_while_the_bus_is_away_are_delivered_when_it_is_back);

async fn profile_exists(system: &System, email: &str) -> bool {
    let token = access_token(&login(&system.http, &system.gateway, email).await);
    let response = system.send(Method::GET, "/api/customers/me", &token).await;
    response.status() == 200
}

async fn metric(system: &System, service: &str, name: &str) -> Option<f64> {
    sample(&metrics_of(&system.http, &system.urls[service]).await?, name)
}

async fn ready_status(system: &System, service: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{}/ready", system.urls[service]))
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn events_written_while_the_bus_is_away_are_delivered_when_it_is_back(backend: TestBackend) {
    let (mut fixture, config) = fresh(backend).await;
    let first = unique_email();
    let later = [unique_email(), unique_email(), unique_email()];

    let system = System::start(config.clone()).await;
    register(&system.http, &system.gateway, &first).await;
    eventually(PATIENCE, "the first profile", || async {
        profile_exists(&system, &first).await.then_some(())
    })
    .await;

    let system = match fixture.backing.nats_mut() {
        Some(nats) => {
            nats.stop().await;
            let (status, body) = eventually(PATIENCE, "identity to report the bus down", || async {
                let (status, body) = ready_status(&system, "identity").await;
                (status == 503).then_some((status, body))
            })
            .await;
            assert_eq!(status, 503);
            let bus = body["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "bus")
                .unwrap()
                .clone();
            assert_eq!(bus["status"], "down", "{body}");

            // Registration does not depend on the bus: the events wait in the outbox.
            for email in &later {
                assert_eq!(register(&system.http, &system.gateway, email).await.status(), 201);
            }
            eventually(
                PATIENCE,
                "the outbox backlog to show the waiting events",
                || async {
                    let backlog = metric(&system, "identity", "mercato_outbox_backlog").await?;
                    (backlog >= 3.0).then_some(())
                },
            )
            .await;
            nats.restart().await;
            system
        }
        None => {
            system.stop().await;

            // With everything down, accounts are created from the CLI's code path: their events
            // can only wait in identity's outbox.
            let identity = mercato::service_config::identity(&config);
            let db = mercato::ServiceName::Identity
                .open_database(&identity.service.database)
                .await
                .unwrap();
            let accounts = mercato_identity::accounts(db.clone(), &identity).unwrap();
            for email in &later {
                mercato_identity::admin::create_admin(&accounts, email, "correct horse")
                    .await
                    .unwrap();
            }
            db.close().await;
            System::start(config.clone()).await
        }
    };

    for email in &later {
        eventually(
            PATIENCE,
            "every profile written while the bus was away",
            || async { profile_exists(&system, email).await.then_some(()) },
        )
        .await;
    }
    eventually(PATIENCE, "identity to be ready and its backlog empty", || async {
        let (status, _) = ready_status(&system, "identity").await;
        let backlog = metric(&system, "identity", "mercato_outbox_backlog").await?;
        (status == 200 && backlog == 0.0).then_some(())
    })
    .await;
    system.stop().await;
}
